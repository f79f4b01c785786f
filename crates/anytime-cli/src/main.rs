//! `anytime`: the Anytime command. `anytime serve` runs a server node; every other subcommand
//! is the scriptable, end-to-end encrypted terminal client working on one profile directory.
//! This crate parses arguments, prints and picks exit codes; protocol and cryptography live in
//! `anytime-client`.

mod commands;
mod dir_lock;
mod net;
mod preview_fetch;
mod profile;
mod profile_access;
mod profile_server;
mod secret;
mod serve;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "anytime", version, about = "Anytime: an end-to-end encrypted messenger")]
pub struct Cli {
    /// Profile directory (one account + device). Default: the user's data directory + /anytime-profile.
    #[arg(long, global = true, env = "ANYTIME_PROFILE")]
    profile: Option<PathBuf>,
    /// Print machine-readable JSON (one object per line for `follow`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a server node (embedded SQLite storage in the data directory).
    Serve(serve::ServeArgs),
    /// Create an account on a server; this profile becomes its first device.
    Register(AccountArgs),
    /// Log in to an existing account; this profile becomes a new device of it (approve it with
    /// `anytime approve CODE` from an existing device).
    Login(AccountArgs),
    /// Show this profile's account and device.
    Whoami,
    /// Look a user up by exact username.
    Lookup { username: String },
    /// List chats.
    Chats,
    /// Start (or open) the direct chat with a user.
    Direct { username: String },
    /// Create a group with members.
    Group { name: String, members: Vec<String> },
    /// Add members to a group (admins only).
    Add { chat: String, members: Vec<String> },
    /// Remove a member from a group (admins only); they cannot read anything sent afterwards.
    Remove { chat: String, member: String },
    /// Make a member an admin (or take it back with --revoke).
    Admin {
        chat: String,
        member: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Leave a group.
    Leave { chat: String },
    /// Create an invite link for a group.
    Invite {
        chat: String,
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u32,
        #[arg(long, default_value_t = 10)]
        max_uses: u32,
    },
    /// Join a group with an invite code.
    Join { code: String },
    /// Send a message. `@username` names a member of the chat (a mention); the first link gets
    /// a preview unless --no-preview.
    Send {
        chat: String,
        text: String,
        #[command(flatten)]
        preview: PreviewArgs,
    },
    /// Reply to a message (mentions and link previews as for `send`).
    Reply {
        chat: String,
        message: String,
        text: String,
        #[command(flatten)]
        preview: PreviewArgs,
    },
    /// Pass a message of this device's history on to another chat, marked "forwarded" (without
    /// who wrote it or where).
    Forward { from_chat: String, message: String, to_chat: String },
    /// Star a message on this device (nobody else learns of it); --remove unstars it.
    Star {
        chat: String,
        message: String,
        #[arg(long)]
        remove: bool,
    },
    /// List the messages starred on this device, across chats, oldest first.
    Starred,
    /// React to a message (add --remove to take it back).
    React {
        chat: String,
        message: String,
        emoji: String,
        #[arg(long)]
        remove: bool,
    },
    /// Edit one of your messages.
    Edit { chat: String, message: String, text: String },
    /// Delete one of your messages for everyone (or, with --for-me, any message from this
    /// device only).
    Delete {
        chat: String,
        message: String,
        /// Remove it from this device only: the other members (and your other devices) keep it.
        #[arg(long)]
        for_me: bool,
    },
    /// Mark messages of a chat as read (sends read receipts; a message request must be accepted first).
    Read { chat: String },
    /// Accept a message request: a chat started by someone you have not talked with.
    Accept { chat: String },
    /// Set the chat's disappearing-message timer in seconds (0 = off).
    Timer { chat: String, seconds: u32 },
    /// Fetch everything new and print it.
    Sync,
    /// Stay connected and print new messages as they arrive; reconnects by itself.
    Follow {
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Show a chat's history (decrypted, from this device).
    History {
        chat: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Show the page before this message id (the first id of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Search this device's decrypted messages.
    Search { query: String },
    /// Show the safety number with a contact; --verify marks it verified.
    Safety {
        username: String,
        #[arg(long)]
        verify: bool,
    },
    /// List this account's devices.
    Devices,
    /// Approve a new device of this account by the link code it showed at login.
    Approve { code: String },
    /// Revoke one of this account's devices.
    Revoke { device: String },
    /// Send a file (photo, video, voice note, document) to a chat: sealed on this device with a
    /// fresh key, uploaded (an interrupted upload resumes when the same command runs again),
    /// then announced in an end-to-end encrypted message that carries the key.
    SendFile {
        chat: String,
        path: PathBuf,
        /// Text to go with the file.
        #[arg(long, default_value = "")]
        caption: String,
        /// The MIME type; by default guessed from the file name.
        #[arg(long)]
        mime: Option<String>,
        /// Upload at most this many bytes per second (a metered link; tests).
        #[arg(long)]
        limit_rate: Option<u64>,
        /// Send a photo as it is, camera metadata (location!) included. By default photos are
        /// turned upright, scaled to 2560 pixels and sent without their metadata.
        #[arg(long)]
        as_file: bool,
        /// A filter for a photo: original, mono, sepia, vivid, warm, cool, fade, vignette, blur,
        /// sharpen, pixelate.
        #[arg(long, default_value = "original")]
        filter: String,
        /// Photo brightness, -100 to 100.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i8).range(-100..=100))]
        brightness: i8,
        /// Photo contrast, -100 to 100.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i8).range(-100..=100))]
        contrast: i8,
        /// Photo saturation, -100 to 100.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i8).range(-100..=100))]
        saturation: i8,
    },
    /// Fetch and open the file of a message (`anytime history CHAT` shows its id), checking that it
    /// is byte for byte what was sent. An interrupted download resumes.
    Download {
        chat: String,
        message: String,
        /// Where to save it; by default its name in the current directory.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The wallet: balances, whether a payment PIN is set, and the limits. Its provider is the
    /// SANDBOX: test cards, no real money.
    Wallet {
        #[command(subcommand)]
        action: Option<WalletCommand>,
    },
    /// Pay a member of a chat from your wallet, then tell the chat with an end-to-end encrypted
    /// payment message (the note never reaches the server). Asks for the payment PIN (or set
    /// ANYTIME_PIN).
    Pay {
        chat: String,
        /// Decimal, in the currency's unit: 12.34 (USD), 1500 (JPY).
        amount: String,
        currency: String,
        /// Whom to pay, by username: required in a group; in a direct chat, the other member.
        #[arg(long)]
        to: Option<String>,
        /// A note for the chat (end-to-end encrypted).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Ask a member of a chat for money: the wallet keeps the request (open 7 days) and the chat
    /// gets an end-to-end encrypted request message naming it. `anytime request pay ID` pays one
    /// (asks for the payment PIN), `anytime request decline ID` declines one (or cancels your own).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Request {
        #[command(subcommand)]
        action: Option<RequestCommand>,
        #[arg(required = true)]
        chat: Option<String>,
        /// Decimal, in the currency's unit: 12.34 (USD), 1500 (JPY).
        #[arg(required = true)]
        amount: Option<String>,
        #[arg(required = true)]
        currency: Option<String>,
        /// Who is asked to pay, by username (a member of the chat).
        #[arg(long, required = true)]
        from: Option<String>,
        /// A note for the chat (end-to-end encrypted).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Split a bill equally: each person sharing it gets a money request for their share (yours,
    /// when you share it, is not asked). `anytime split show ID` shows who paid.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Split {
        #[command(subcommand)]
        action: Option<SplitCommand>,
        #[arg(required = true)]
        chat: Option<String>,
        /// The whole bill, decimal in the currency's unit.
        #[arg(required = true)]
        total: Option<String>,
        #[arg(required = true)]
        currency: Option<String>,
        /// Who shares it, by username, comma-separated (name yourself to take a share); default:
        /// every member of the chat, you included.
        #[arg(long, value_delimiter = ',')]
        with: Vec<String>,
        /// A custom split instead of equal shares: what one member is asked, USERNAME=AMOUNT
        /// (repeat it for each; your own part of the bill is not asked).
        #[arg(long = "share", value_name = "USERNAME=AMOUNT", conflicts_with = "with")]
        shares: Vec<String>,
        /// A note for the chat (end-to-end encrypted).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Send a red envelope to a group: the total leaves your wallet now and members grab shares
    /// (`anytime grab ID`), first come first served; what nobody grabs in 24 hours comes back.
    /// Asks for the payment PIN (or set ANYTIME_PIN).
    Envelope {
        chat: String,
        /// The whole amount, decimal in the currency's unit.
        total: String,
        currency: String,
        /// How many people can grab a share.
        #[arg(long)]
        shares: u32,
        /// Equal shares (default: each share a random amount).
        #[arg(long)]
        equal: bool,
        /// A note for the chat (end-to-end encrypted).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Grab your share of a red envelope (its message in the chat names its id).
    Grab { envelope: String },
    /// Block a user.
    Block { username: String },
    /// Unblock a user.
    Unblock { username: String },
}

/// `anytime wallet …`.
#[derive(Subcommand)]
pub enum WalletCommand {
    /// Set the payment PIN (4 to 8 digits), or change it: typed without echo on a terminal;
    /// scripts set ANYTIME_PIN (and ANYTIME_CURRENT_PIN to change one) or pass lines on stdin.
    Pin,
    /// Add money from a SANDBOX test card (no real money): 4242 4242 4242 4242 succeeds,
    /// 4000 0000 0000 0002 is declined, 4000 0000 0000 3220 asks for a second step (code 123456).
    TopUp {
        /// Decimal, in the currency's unit: 100.00 (USD), 1500 (JPY).
        amount: String,
        currency: String,
        /// The sandbox test card number.
        #[arg(long)]
        card: String,
        /// The code of the card's second step, when it asks for one (else it is asked for).
        #[arg(long)]
        code: Option<String>,
    },
    /// Pay money out of the wallet to a SANDBOX test card (no real money): 4242 4242 4242 4242 is
    /// paid, 4000 0000 0000 0002 is declined, 4000 0000 0000 0077 never answers (the money stays
    /// held, then comes back). Asks for the payment PIN.
    Payout {
        /// Decimal, in the currency's unit.
        amount: String,
        currency: String,
        /// The sandbox test card number to pay out to.
        #[arg(long)]
        card: String,
    },
    /// The wallet's transfers in a currency, newest first.
    History {
        currency: String,
        /// Write the server's CSV export of every transfer in the currency to this file instead.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Show at most this many (default: all).
        #[arg(long)]
        limit: Option<u32>,
        /// Transfers asked for per request.
        #[arg(long, hide = true, default_value_t = 50)]
        page_size: u32,
    },
    /// Ask the server whether a transfer (a payment message names one) is one of yours: who paid
    /// whom how much. A receiver checks a payment message's claim this way.
    Check { transfer: String },
}

/// `anytime request …`.
#[derive(Subcommand)]
pub enum RequestCommand {
    /// Pay a money request made to you (a request or a split bill's share): asks for the payment
    /// PIN (or set ANYTIME_PIN), then tells the request's chat with a payment message.
    Pay { request: String },
    /// Decline a money request made to you, or cancel one you made.
    Decline { request: String },
    /// Show a money request and its status.
    Show { request: String },
}

/// `anytime split …`.
#[derive(Subcommand)]
pub enum SplitCommand {
    /// The split's tracker: each share's request, who paid, and what came in of what was asked.
    Show { split: String },
}

/// Link previews of `send` and `reply`.
#[derive(clap::Args)]
pub struct PreviewArgs {
    /// Do not fetch the first link's page for a preview. This device fetches it (the server never
    /// fetches URLs), which reveals your IP address to that site: turn it off when that matters.
    #[arg(long)]
    pub no_preview: bool,
}

/// Where and who: shared by `register` and `login`.
#[derive(clap::Args)]
pub struct AccountArgs {
    #[arg(long)]
    server: String,
    username: String,
    /// Password (or set ANYTIME_PASSWORD).
    #[arg(long, env = "ANYTIME_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long, default_value = "terminal")]
    device_name: String,
}

fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let what = format!("anytime {}", matches.subcommand_name().unwrap_or_default());
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYTIME_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        command => commands::run(cli.profile, cli.json, command, &what),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A closed pipe (`anytime follow | head`) is not a failure.
            if error
                .chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
            {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "anytime: {error:#}");
            ExitCode::from(2)
        }
    }
}
