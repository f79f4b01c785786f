//! Every client subcommand: open the profile, connect, catch up, act, print.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use anytime_client::content::{self, Content, ReceiptKind};
use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_client::{Client, ClientError, Event, Transport};
use anytime_proto::frame::{self, ConvKind};
use anytime_proto::http::{ErrorBody, SessionResponse};
use anytime_proto::{ConvId, DeviceId, MsgId, ServerFrame};
use serde_json::json;

use crate::net::{self, Net};
use crate::profile::{hex, parse_msg_id, Profile};
use crate::Command;

/// Quiet time after which catching up counts as done.
const IDLE_MS: u64 = 400;

struct Out {
    json: bool,
}

impl Out {
    fn print(&self, human: impl std::fmt::Display, value: serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{value}")?;
        } else {
            writeln!(stdout, "{human}")?;
        }
        stdout.flush()?;
        Ok(())
    }

    fn event(&self, event: &Event) -> anyhow::Result<()> {
        match event {
            Event::Message { conv, seq, msg_id, sender, content, own, .. } => {
                let (kind, text) = describe(content);
                let value = json!({"type": "message", "conv": conv, "seq": seq, "msg_id": hex(&msg_id.0),
                    "sender": sender.user, "sender_device": sender.device, "kind": kind, "text": text, "own": own});
                self.print(format!("[{conv}] #{seq} {}: {text}", sender.user), value)
            }
            Event::Undecryptable { conv, seq, sender, reason } => self.print(
                format!("[{conv}] #{seq} {sender}: (cannot decrypt: {reason})"),
                json!({"type": "undecryptable", "conv": conv, "seq": seq, "sender": sender, "reason": reason}),
            ),
            Event::GroupChanged { conv, epoch, removed_self } => self.print(
                format!(
                    "[{conv}] encryption group changed (epoch {epoch}){}",
                    if *removed_self { ", you were removed" } else { "" }
                ),
                json!({"type": "group_changed", "conv": conv, "epoch": epoch, "removed_self": removed_self}),
            ),
            Event::Joined { conv } => self.print(format!("[{conv}] joined"), json!({"type": "joined", "conv": conv})),
            Event::ConversationChanged { conv, removed } => self.print(
                format!("[{conv}] {}", if *removed { "you were removed" } else { "chat changed" }),
                json!({"type": "conversation_changed", "conv": conv, "removed": removed}),
            ),
            Event::MessagesExpired { conv, up_to_seq } => self.print(
                format!("[{conv}] messages up to #{up_to_seq} expired on the server before this device fetched them"),
                json!({"type": "messages_expired", "conv": conv, "up_to_seq": up_to_seq}),
            ),
        }
    }
}

fn describe(content: &Content) -> (&'static str, String) {
    match content {
        Content::Text(t) => ("text", t.body.clone()),
        Content::Reply(r) => ("reply", format!("(reply to {}) {}", hex(&r.to.0), r.body)),
        Content::Reaction(r) => {
            ("reaction", format!("{} {} {}", if r.remove { "unreacted" } else { "reacted" }, r.emoji, hex(&r.to.0)))
        }
        Content::Edit(e) => ("edit", format!("(edited {}) {}", hex(&e.to.0), e.body)),
        Content::Delete(d) => ("delete", format!("(deleted {})", hex(&d.to.0))),
        Content::Receipt(r) => ("receipt", format!("{:?} receipt for {} messages", r.kind, r.messages.len())),
        Content::Timer(t) => ("timer", format!("disappearing messages: {} s", t.seconds)),
        Content::Unsupported { kind } => ("unsupported", format!("unsupported message (kind {kind})")),
    }
}

struct Session {
    client: Client<Profile>,
    net: Net,
    out: Out,
    /// What the catch-up on connect produced (printed by `sync` and `follow`).
    initial: Vec<Event>,
}

fn new_msg_id() -> MsgId {
    anytime_client_tokio::msg_id()
}

fn expect<T>(frame: ServerFrame, pick: impl FnOnce(ServerFrame) -> Option<T>) -> anyhow::Result<T> {
    if let ServerFrame::Error(error) = &frame {
        bail!("the server refused: {} ({})", error.code, error.code.description());
    }
    let shown = format!("{frame:?}");
    pick(frame).with_context(|| format!("unexpected answer from the server: {shown}"))
}

impl Session {
    async fn open(dir: &Path, json: bool) -> anyhow::Result<Session> {
        let profile = Profile::open(dir)?;
        let server = profile
            .get_text("server")?
            .context("this profile has no account: run `anytime register` or `anytime login` first")?;
        let token = profile.get_text("token")?.context("this profile has no session: run `anytime login`")?;
        let state = profile.get("crypto")?.context("this profile has no encryption keys: run `anytime login` again")?;
        let crypto = DeviceCrypto::import(&state).context("while loading this device's encryption state")?;
        let net = net::connect(&server, &token, 6).await?;
        let mut session = Session { client: Client::new(crypto, profile), net, out: Out { json }, initial: Vec::new() };
        // A device approved since its login uploads its key packages on first use.
        session.client.replenish_key_packages(&mut session.net).await?;
        session.initial = session.catch_up(false).await?;
        Ok(session)
    }

    /// Processes everything pending, then repairs every group whose devices differ from the
    /// server's membership (membership pushes are ephemeral: a device that was offline when a
    /// contact linked or revoked a device learns it here). Optionally prints.
    async fn catch_up(&mut self, print: bool) -> anyhow::Result<Vec<Event>> {
        let events = self.client.sync(&mut self.net, IDLE_MS).await?;
        let mut changed: BTreeSet<ConvId> = events
            .iter()
            .filter_map(|e| match e {
                Event::ConversationChanged { conv, removed: false } => Some(*conv),
                _ => None,
            })
            .collect();
        changed.extend(self.client.crypto.groups());
        let mut all = events;
        for conv in changed {
            all.extend(self.reconcile(conv).await?);
        }
        if print {
            for event in &all {
                self.out.event(event)?;
            }
            self.warn_changed_safety_numbers()?;
        }
        Ok(all)
    }

    /// Prints a warning, once, for each verified contact whose keys changed since verification.
    fn warn_changed_safety_numbers(&self) -> anyhow::Result<()> {
        for (user, verified, conv, warned) in self.client.store.verified_contacts()? {
            if warned || !self.client.crypto.has_group(conv) {
                continue;
            }
            let now = self.client.safety_number_with(conv, user);
            if now.digits != verified {
                self.out.print(
                    format!("WARNING: the safety number with user {user} changed (a device was added or removed); compare it again with `anytime safety`"),
                    json!({"type": "safety_number_changed", "user": user, "conv": conv}),
                )?;
                self.client.store.set_warned(user)?;
            }
        }
        Ok(())
    }

    async fn reconcile(&mut self, conv: ConvId) -> anyhow::Result<Vec<Event>> {
        Ok(self.client.reconcile(&mut self.net, conv).await?)
    }

    async fn user(&mut self, username: &str) -> anyhow::Result<frame::Profile> {
        let answer = self.net.request(frame::LookupUser { username: username.to_owned() }.into()).await?;
        match answer {
            ServerFrame::Profile(profile) => Ok(profile),
            ServerFrame::Error(e) if e.code == anytime_proto::ErrorCode::UserNotFound => {
                bail!("there is no user named {username:?}; check the spelling (usernames are exact)")
            }
            other => expect(other, |_| None),
        }
    }

    async fn send(&mut self, conv: ConvId, content: Content) -> anyhow::Result<()> {
        let msg_id = new_msg_id();
        let seq = match self.client.send(&mut self.net, conv, content.clone(), msg_id).await {
            Err(ClientError::NotInGroup(_)) => {
                // Maybe the Welcome is just arriving: catch up once and retry once.
                self.catch_up(false).await?;
                match self.client.send(&mut self.net, conv, content, msg_id).await {
                    Err(ClientError::NotInGroup(_)) => bail!(
                        "this device is not in the encrypted group of {conv} yet (a member's device adds it when it syncs); retry later"
                    ),
                    other => other?,
                }
            }
            other => other?,
        };
        self.out.print(
            format!("sent {} (#{seq})", hex(&msg_id.0)),
            json!({"msg_id": hex(&msg_id.0), "seq": seq, "conv": conv}),
        )
    }
}

fn parse_conv(text: &str) -> anyhow::Result<ConvId> {
    text.parse().map_err(|_| anyhow::anyhow!("{text:?} is not a chat id; `anytime chats` lists them"))
}

async fn account(server: &str, path: &str, body: serde_json::Value) -> anyhow::Result<SessionResponse> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("could not reach {server}; is the server running?"))?;
    if !response.status().is_success() {
        let error: ErrorBody = response.json().await.context("the server answered with an unreadable error")?;
        bail!("{} ({})", error.message, error.code);
    }
    Ok(response.json().await?)
}

async fn enroll_via(dir: &Path, json: bool, path: &str, account: crate::AccountArgs) -> anyhow::Result<()> {
    let crate::AccountArgs { server, username, password, device_name } = account;
    let body = json!({"username": username, "password": password, "device_name": device_name});
    let session = self::account(&server, path, body).await?;
    enroll(dir, json, &server, &username, session).await
}

async fn enroll(dir: &Path, json: bool, server: &str, username: &str, session: SessionResponse) -> anyhow::Result<()> {
    let profile = Profile::open(dir)?;
    if profile.get("token")?.is_some() {
        bail!("the profile {} already holds an account; use another --profile", dir.display());
    }
    let identity = DeviceIdentity { user: session.user_id, device: session.device_id };
    let crypto = DeviceCrypto::new(identity)?;
    profile.set("crypto", &crypto.export())?;
    profile.set("server", server.trim_end_matches('/').as_bytes())?;
    profile.set("token", session.token.as_bytes())?;
    profile.set("user", session.user_id.to_string().as_bytes())?;
    profile.set("device", session.device_id.to_string().as_bytes())?;
    profile.set("username", username.as_bytes())?;
    if let Some(code) = &session.link_code {
        // Pending: it cannot connect until approved, so key packages are uploaded on first use.
        let human = format!(
            "{username}: new device {} waits for approval.\nOn a device already linked to this account, run:\n  anytime approve {code}\nthen run `anytime sync` here.",
            session.device_id
        );
        let value = json!({"user": session.user_id, "device": session.device_id, "username": username, "pending": true, "link_code": code});
        return Out { json }.print(human, value);
    }
    let mut net = net::connect(server, &session.token, 3).await?;
    let mut client = Client::new(crypto, profile);
    let count = client.replenish_key_packages(&mut net).await?;
    Out { json }.print(
        format!("{username} is user {} on device {} ({count} key packages uploaded)", session.user_id, session.device_id),
        json!({"user": session.user_id, "device": session.device_id, "username": username, "key_packages": count, "pending": false}),
    )
}

pub fn run(profile: Option<PathBuf>, json: bool, command: Command) -> anyhow::Result<()> {
    let dir = match profile {
        Some(dir) => dir,
        None => {
            dirs::data_dir().context("no user data directory is known; pass --profile DIR")?.join("anytime-profile")
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(dispatch(dir, json, command))
}

async fn dispatch(dir: PathBuf, json: bool, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register(account) => return enroll_via(&dir, json, "/v1/register", account).await,
        Command::Login(account) => return enroll_via(&dir, json, "/v1/login", account).await,
        Command::Whoami => {
            let profile = Profile::open(&dir)?;
            let field = |k| profile.get_text(k).map(|v| v.unwrap_or_default());
            let (username, user, device, server) =
                (field("username")?, field("user")?, field("device")?, field("server")?);
            if user.is_empty() {
                bail!("this profile has no account: run `anytime register` or `anytime login` first");
            }
            return Out { json }.print(
                format!("{username} (user {user}, device {device}) on {server}"),
                json!({"username": username, "user": user, "device": device, "server": server}),
            );
        }
        Command::History { chat, limit } => {
            let profile = Profile::open(&dir)?;
            let conv = parse_conv(&chat)?;
            let entries = profile.history(conv, limit)?;
            let out = Out { json };
            for e in entries {
                let flags =
                    format!("{}{}", if e.edited { " (edited)" } else { "" }, if e.deleted { " (deleted)" } else { "" });
                let reactions: Vec<String> = e.reactions.iter().map(|(_, emoji)| emoji.clone()).collect();
                let human = format!("{} #{} {}: {}{flags} {}", e.msg_id, e.seq, e.sender, e.text, reactions.join(""));
                out.print(human, serde_json::to_value(&e)?)?;
            }
            return Ok(());
        }
        Command::Search { query } => {
            let profile = Profile::open(&dir)?;
            let out = Out { json };
            for (msg_id, body) in profile.search(&query)? {
                out.print(format!("{msg_id} {body}"), json!({"msg_id": msg_id, "text": body}))?;
            }
            return Ok(());
        }
        _ => {}
    }
    let mut s = Session::open(&dir, json).await?;
    match command {
        Command::Sync => {
            for event in std::mem::take(&mut s.initial) {
                s.out.event(&event)?;
            }
            s.catch_up(true).await?;
        }
        Command::Follow { seconds } => follow(&mut s, &dir, seconds).await?,
        Command::Lookup { username } => {
            let p = s.user(&username).await?;
            s.out.print(
                format!("{} is user {} ({} devices)", p.username, p.user, p.devices.len()),
                json!({"user": p.user, "username": p.username, "display_name": p.display_name, "devices": p.devices}),
            )?;
        }
        Command::Chats => {
            let list = expect(s.net.request(frame::ListConversations {}.into()).await?, |f| match f {
                ServerFrame::Conversations(c) => Some(c.conversations),
                _ => None,
            })?;
            for c in list {
                let kind = if c.kind == ConvKind::Direct { "direct" } else { "group" };
                s.out.print(format!("{} {kind} {:?} ({} members)", c.conv, c.name, c.member_count), json!({"conv": c.conv, "kind": kind, "name": c.name, "members": c.member_count, "last_seq": c.last_seq}))?;
            }
        }
        Command::Direct { username } => {
            let peer = s.user(&username).await?;
            let info = expect(s.net.request(frame::CreateDirect { peer: peer.user }.into()).await?, conversation)?;
            for e in s.client.establish(&mut s.net, &info).await? {
                s.out.event(&e)?;
            }
            s.out.print(format!("{}", info.conv), json!({"conv": info.conv}))?;
        }
        Command::Group { name, members } => {
            let mut users = Vec::new();
            for m in &members {
                users.push(s.user(m).await?.user);
            }
            let info = expect(s.net.request(frame::CreateGroup { name, members: users }.into()).await?, conversation)?;
            s.client.establish(&mut s.net, &info).await?;
            s.out.print(format!("{}", info.conv), json!({"conv": info.conv}))?;
        }
        Command::Add { chat, members } => {
            let conv = parse_conv(&chat)?;
            let mut users = Vec::new();
            for m in &members {
                users.push(s.user(m).await?.user);
            }
            let info = expect(s.net.request(frame::AddMembers { conv, users }.into()).await?, conversation)?;
            s.client.establish(&mut s.net, &info).await?;
            s.out.print(format!("added to {conv}"), json!({"conv": conv}))?;
        }
        Command::Remove { chat, member } => {
            let conv = parse_conv(&chat)?;
            let user = s.user(&member).await?.user;
            expect(s.net.request(frame::RemoveMember { conv, user }.into()).await?, done)?;
            s.client.remove_user_from_group(&mut s.net, conv, user).await?;
            s.out.print(format!("removed {member} from {conv}"), json!({"conv": conv, "removed": user}))?;
        }
        Command::Admin { chat, member, revoke } => {
            let conv = parse_conv(&chat)?;
            let user = s.user(&member).await?.user;
            expect(s.net.request(frame::SetAdmin { conv, user, admin: !revoke }.into()).await?, done)?;
            s.out.print("done", json!({"conv": conv, "user": user, "admin": !revoke}))?;
        }
        Command::Leave { chat } => {
            let conv = parse_conv(&chat)?;
            expect(s.net.request(frame::Leave { conv }.into()).await?, done)?;
            s.client.crypto.drop_group(conv);
            s.out.print(format!("left {conv}"), json!({"conv": conv}))?;
        }
        Command::Invite { chat, ttl_secs, max_uses } => {
            let conv = parse_conv(&chat)?;
            let invite =
                expect(s.net.request(frame::CreateInvite { conv, ttl_secs, max_uses }.into()).await?, |f| match f {
                    ServerFrame::Invite(i) => Some(i),
                    _ => None,
                })?;
            s.out.print(
                &invite.code,
                json!({"code": invite.code, "conv": conv, "expires_at_ms": invite.expires_at_ms}),
            )?;
        }
        Command::Join { code } => {
            let info = expect(s.net.request(frame::JoinInvite { code }.into()).await?, conversation)?;
            s.out.print(
                format!("{} (an existing member's device adds this device to the encryption group)", info.conv),
                json!({"conv": info.conv}),
            )?;
        }
        Command::Send { chat, text } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Text(content::Text { body: text, mentions: Vec::new() })).await?;
        }
        Command::Reply { chat, message, text } => {
            let conv = parse_conv(&chat)?;
            s.send(
                conv,
                Content::Reply(content::Reply { to: parse_msg_id(&message)?, body: text, mentions: Vec::new() }),
            )
            .await?;
        }
        Command::React { chat, message, emoji, remove } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Reaction(content::Reaction { to: parse_msg_id(&message)?, emoji, remove })).await?;
        }
        Command::Edit { chat, message, text } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Edit(content::Edit { to: parse_msg_id(&message)?, body: text })).await?;
        }
        Command::Delete { chat, message } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Delete(content::Delete { to: parse_msg_id(&message)? })).await?;
        }
        Command::Timer { chat, seconds } => {
            let conv = parse_conv(&chat)?;
            s.send(conv, Content::Timer(content::Timer { seconds })).await?;
        }
        Command::Read { chat } => {
            let conv = parse_conv(&chat)?;
            let ids: Vec<MsgId> = s
                .client
                .store
                .history(conv, 1_000)?
                .iter()
                .filter(|e| !e.own)
                .map(|e| parse_msg_id(&e.msg_id))
                .collect::<Result<_, _>>()?;
            s.send(conv, Content::Receipt(content::Receipt { kind: ReceiptKind::Read, messages: ids })).await?;
        }
        Command::Safety { username, verify } => safety(&mut s, &username, verify).await?,
        Command::Devices => {
            let list = expect(s.net.request(frame::ListDevices {}.into()).await?, |f| match f {
                ServerFrame::Devices(d) => Some(d.devices),
                _ => None,
            })?;
            for d in list {
                s.out.print(
                    format!("{} {:?}{}", d.device, d.name, if d.current { " (this device)" } else { "" }),
                    json!({"device": d.device, "name": d.name, "current": d.current, "approved": d.approved, "last_seen_ms": d.last_seen_ms}),
                )?;
            }
        }
        Command::Approve { code } => {
            expect(s.net.request(frame::ApproveDevice { code }.into()).await?, done)?;
            s.out.print("approved: the new device joins your chats when it next syncs", json!({"approved": true}))?;
        }
        Command::Revoke { device } => {
            let device: DeviceId = device
                .parse()
                .map_err(|_| anyhow::anyhow!("{device:?} is not a device id; `anytime devices` lists them"))?;
            expect(s.net.request(frame::RevokeDevice { device }.into()).await?, done)?;
            // Remove it from every group this device shares with it.
            let convs: Vec<ConvId> = s.client.crypto.groups();
            for conv in convs {
                s.reconcile(conv).await?;
            }
            s.out.print(format!("revoked {device}"), json!({"revoked": device}))?;
        }
        Command::Block { username } => {
            let user = s.user(&username).await?.user;
            expect(s.net.request(frame::Block { user }.into()).await?, done)?;
            s.out.print(format!("blocked {username}"), json!({"blocked": user}))?;
        }
        Command::Unblock { username } => {
            let user = s.user(&username).await?.user;
            expect(s.net.request(frame::Unblock { user }.into()).await?, done)?;
            s.out.print(format!("unblocked {username}"), json!({"unblocked": user}))?;
        }
        Command::Serve(_)
        | Command::Register(_)
        | Command::Login(_)
        | Command::Whoami
        | Command::History { .. }
        | Command::Search { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(())
}

fn conversation(frame: ServerFrame) -> Option<frame::ConversationInfo> {
    match frame {
        ServerFrame::ConversationInfo(info) => Some(info),
        _ => None,
    }
}

fn done(frame: ServerFrame) -> Option<()> {
    matches!(frame, ServerFrame::Done(_)).then_some(())
}

async fn safety(s: &mut Session, username: &str, verify: bool) -> anyhow::Result<()> {
    let peer = s.user(username).await?;
    let info = expect(s.net.request(frame::CreateDirect { peer: peer.user }.into()).await?, conversation)?;
    s.client.establish(&mut s.net, &info).await?;
    let number = s.client.safety_number_with(info.conv, peer.user);
    let previous = s.client.store.verified(peer.user)?;
    let changed = previous.as_ref().is_some_and(|p| *p != number.digits);
    if verify {
        s.client.store.set_verified(peer.user, &number.digits, info.conv)?;
    }
    let status = match (&previous, changed, verify) {
        (_, _, true) => "verified",
        (Some(_), true, _) => {
            "CHANGED since you verified it: their keys changed (new or removed device); compare again"
        }
        (Some(_), false, _) => "verified",
        (None, _, _) => "not verified",
    };
    s.out.print(
        format!("safety number with {username}: {}\n{}\nstatus: {status}", number.digits, number.qr),
        json!({"user": peer.user, "digits": number.digits, "qr": number.qr, "verified": verify || (previous.is_some() && !changed), "changed": changed}),
    )
}

async fn follow(s: &mut Session, dir: &Path, seconds: Option<u64>) -> anyhow::Result<()> {
    let deadline = seconds.map(|secs| Instant::now() + Duration::from_secs(secs));
    for event in std::mem::take(&mut s.initial) {
        s.out.event(&event)?;
    }
    s.catch_up(true).await?;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        match s.net.next_push(500).await {
            Ok(Some(push)) => {
                let events = s.client.handle_push(&mut s.net, push).await?;
                let mut changed = Vec::new();
                for event in &events {
                    s.out.event(event)?;
                    if let Event::ConversationChanged { conv, removed: false } = event {
                        changed.push(*conv);
                    }
                }
                for conv in changed {
                    for event in s.reconcile(conv).await? {
                        s.out.event(&event)?;
                    }
                }
            }
            Ok(None) => {}
            Err(ClientError::Transport(_)) => {
                // Reconnect with backoff and resume from the cursor.
                let json = s.out.json;
                *s = Session::open(dir, json).await?;
                for event in std::mem::take(&mut s.initial) {
                    s.out.event(&event)?;
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}
