//! Every bound of the protocol, with its unit and why it is what it is. Server and clients read
//! these; nothing else in the workspace hard-codes a limit.

/// Largest WebSocket message the server decodes into a frame, bytes. Large enough for an MLS
/// Commit + Welcome that adds a few hundred members (ratchet tree included); attachments never
/// travel in frames.
pub const FRAME_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Hard cap at the WebSocket layer, bytes. Between `FRAME_BYTES_MAX` and this the server still
/// reads the message and answers `frame_too_large` (connection stays up); above it the socket is
/// closed, because buffering without bound would let one peer exhaust memory.
pub const WS_MESSAGE_BYTES_MAX: u32 = 2 * FRAME_BYTES_MAX;

/// Largest application message ciphertext, bytes. Text, reactions and receipts are tiny; media
/// travel as encrypted blobs referenced from a message.
pub const MESSAGE_BYTES_MAX: u32 = 128 * 1024;

/// Largest MLS handshake message (Commit) or Welcome, bytes.
pub const HANDSHAKE_BYTES_MAX: u32 = 3 * 1024 * 1024;

/// Members (accounts) of one group.
pub const GROUP_MEMBERS_MAX: u32 = 5_000;

/// Accounts added in one `AddMembers` or `CreateGroup` request.
pub const USERS_PER_REQUEST_MAX: u32 = 512;

/// Devices (logins) per account. Every device is an MLS leaf in every group of its account,
/// so this bounds the group size in leaves as well.
pub const DEVICES_PER_USER_MAX: u32 = 10;

/// Simultaneous WebSocket connections per account (a device reconnecting may briefly hold two).
pub const CONNECTIONS_PER_ACCOUNT_MAX: u32 = 2 * DEVICES_PER_USER_MAX;

/// One-time key packages stored per device.
pub const KEY_PACKAGES_PER_DEVICE_MAX: u32 = 200;

/// Key packages in one upload.
pub const KEY_PACKAGES_PER_UPLOAD_MAX: u32 = 100;

/// One key package, bytes.
pub const KEY_PACKAGE_BYTES_MAX: u32 = 16 * 1024;

/// Below this many one-time key packages the server tells the device to upload more.
pub const KEY_PACKAGES_LOW: u32 = 10;

/// Username length in bytes; usernames are ASCII `[a-z0-9_.]`, start with a letter or digit and
/// have no two punctuation characters in a row (`...`, `_.a`, `.alice` look like nothing or like
/// someone else).
pub const USERNAME_BYTES_MIN: u32 = 3;
pub const USERNAME_BYTES_MAX: u32 = 32;

/// Password length in bytes. The upper bound keeps argon2 input (and request bodies) small.
pub const PASSWORD_BYTES_MIN: u32 = 8;
pub const PASSWORD_BYTES_MAX: u32 = 1024;

/// Display names, group names and device names, bytes of UTF-8.
pub const NAME_BYTES_MAX: u32 = 128;

/// An avatar reference (an opaque blob id or URL chosen by the client), bytes.
pub const AVATAR_REF_BYTES_MAX: u32 = 512;

/// How long a newly logged-in device may wait for approval, milliseconds (10 minutes).
pub const LINK_CODE_TTL_MS: u64 = 10 * 60 * 1000;

/// Lifetime of an invite link, seconds (30 days).
pub const INVITE_TTL_SECS_MAX: u32 = 30 * 24 * 3600;

/// Uses of one invite link.
pub const INVITE_USES_MAX: u32 = 100_000;

/// Users in one `SubscribePresence`.
pub const PRESENCE_SUBSCRIPTIONS_MAX: u32 = 1_000;

/// Messages the server pushes per page when a device catches up from its cursor.
pub const CATCH_UP_PAGE_LEN: u32 = 512;

/// Frames queued for one connection before it is declared lagging and resynced from storage.
pub const SEND_QUEUE_LEN_MAX: u32 = 4_096;

/// HTTP request bodies (register, login), bytes.
pub const HTTP_BODY_BYTES_MAX: u32 = 16 * 1024;

// ---- Server resources. Bounds that keep one client (or many slow ones) from exhausting the
// ---- server's memory, file descriptors or CPU. docs/operations.md lists them for operators.

/// A client must send a request's complete header block within this, milliseconds. Slow
/// "trickling" headers otherwise hold a socket (and a file descriptor) for as long as they like.
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;

/// A request body (register, login: at most `HTTP_BODY_BYTES_MAX`) must arrive within this,
/// milliseconds; the server answers 408 and closes otherwise.
pub const HTTP_BODY_TIMEOUT_MS: u64 = 10_000;

/// A plain HTTP connection (not a WebSocket) is closed after this long, milliseconds; browsers
/// open a new one as needed. Keep-alive must not become a way to hold sockets forever.
pub const HTTP_CONNECTION_MAX_AGE_MS: u64 = 60_000;

/// A WebSocket must authenticate (Hello) within this after the upgrade, milliseconds.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// Unauthenticated connections (plain HTTP, or a WebSocket before Hello) from one address.
/// Generous for a NAT full of real users, who authenticate within a second; a flood from one
/// address is refused at accept.
pub const UNAUTHENTICATED_PER_IP_MAX: u32 = 64;

/// Unauthenticated connections in total. Beyond it, and when open files near their limit, the
/// oldest unauthenticated connections are closed first: authenticated users keep their sockets.
pub const UNAUTHENTICATED_MAX: u32 = 4_096;

/// File descriptors kept free for storage, logs and outgoing connections: connections are shed
/// when fewer than this remain below the open-files limit.
pub const FD_RESERVE: u64 = 64;

/// Password hashes (argon2id, ~19 MiB and tens of ms of CPU each) waiting for a core beyond
/// those running (one per core). Past this, `server_busy` at once. The queue is short enough
/// that its wait is bounded without a timer (32 hashes on 2 cores: well under a second).
pub const PASSWORD_HASH_QUEUE_MAX: usize = 32;

/// Failed logins per (username, address) that are not slowed down.
pub const LOGIN_FREE_FAILURES: u32 = 5;

/// The wait after the first slowed failure, milliseconds; it doubles with each further one.
pub const LOGIN_DELAY_BASE_MS: u64 = 1_000;

/// The longest wait between attempts of one (username, address), milliseconds (15 minutes).
pub const LOGIN_DELAY_MAX_MS: u64 = 15 * 60 * 1000;

/// Bytes queued for one connection (pushes plus answers) but not yet written to its socket.
/// A receiver this far behind is disconnected; it resumes from storage when it reconnects.
/// Without a byte bound, 4,096 queued frames of 128 KiB pinned half a gigabyte per reader.
pub const OUTBOUND_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// How long a connection may stay `OUTBOUND_BYTES_MAX` behind before it is disconnected,
/// milliseconds. A reader that makes no room in that time has stopped reading.
pub const SLOW_CONSUMER_TIMEOUT_MS: u64 = 15_000;

// ---- Implementation bounds: queues, batches and retries inside one component. Not part of the
// ---- protocol, but here so that every bound of the system is in one place with its reason.

/// SQLite store: jobs in one transaction. Bounds the latency a huge backlog adds to the first job.
pub const SQLITE_BATCH_JOBS_MAX: usize = 4_096;

/// SQLite store: jobs waiting for the writer; senders wait (backpressure) beyond this.
pub const SQLITE_QUEUE_JOBS_MAX: usize = 16_384;

/// SQLite store: idle reader connections kept open.
pub const SQLITE_READERS_IDLE_MAX: usize = 8;

/// PostgreSQL store: jobs in one transaction (each is a round trip, hence fewer than SQLite's).
pub const POSTGRES_BATCH_JOBS_MAX: usize = 1_024;

/// PostgreSQL store: jobs waiting for the batch task; senders wait (backpressure) beyond this.
pub const POSTGRES_QUEUE_JOBS_MAX: usize = 16_384;

/// Rows deleted per statement in one garbage-collection pass, so one pass never holds the
/// writer for long.
pub const GC_ROWS_MAX: i64 = 50_000;

/// Expired sessions deleted per garbage-collection pass (the rest go in the next pass).
pub const GC_EXPIRED_DEVICES_MAX: u32 = 1_000;

/// A Web Push endpoint URL, bytes.
pub const PUSH_ENDPOINT_BYTES_MAX: usize = 1_024;

/// A cluster node silent for this long is presumed dead: its users no longer count as online,
/// milliseconds.
pub const NODE_SILENCE_MAX_MS: u64 = 15_000;

/// Frames queued for one socket's writer; pushes beyond this wait in the hub queue instead
/// (bytes are bounded separately by `OUTBOUND_BYTES_MAX`).
pub const WS_WRITE_QUEUE_LEN_MAX: usize = 256;

/// Requests of one connection waiting for durable storage at once; beyond this the socket is
/// not read until some complete (backpressure on a pipelining client).
pub const WS_IN_FLIGHT_MAX: usize = 256;

/// Cluster events queued for publication to NATS before new ones are dropped (and recovered
/// from storage).
pub const NATS_PUBLISH_QUEUE_LEN_MAX: usize = 65_536;

/// A client's attempts at one group change before giving up (each loses only to another
/// member's commit).
pub const COMMIT_ATTEMPTS_MAX: u32 = 10;

/// Longest reaction a client keeps: enough for any emoji sequence (flags, skin tones, families).
pub const REACTION_BYTES_MAX: usize = 64;

/// Past MLS epochs whose application messages a client can still open: a member may send
/// just before a commit lands.
pub const MLS_PAST_EPOCHS_MAX: usize = 5;

/// A device link code (`ApproveDevice`), bytes; codes are 6 digits.
pub const LINK_CODE_BYTES_MAX: usize = 16;

/// People one message may mention (@name); more are dropped by the receiver.
pub const MENTIONS_MAX: usize = 64;

/// A link preview's parts, bytes: longer ones are cut (at a character boundary) by the sender
/// and refused by the receiver.
pub const PREVIEW_URL_BYTES_MAX: usize = 2_048;
pub const PREVIEW_TITLE_BYTES_MAX: usize = 256;
pub const PREVIEW_DESCRIPTION_BYTES_MAX: usize = 512;

/// How much of a page the sender's device reads to find its title and description: the head
/// of any sane page fits, and a huge or endless response costs nothing more.
pub const PREVIEW_PAGE_BYTES_MAX: usize = 256 * 1024;

/// Wrong payment PINs in a row before payments lock, and for how long, ms.
pub const PIN_FAILURES_MAX: u32 = 5;
pub const PIN_LOCK_MS: u64 = 15 * 60 * 1000;

/// Most one wallet transfer may move, and most a wallet may send per UTC day, in whole units of
/// the currency (10,000 dollars, 10,000 yen): a stolen session cannot empty a wallet at once.
pub const WALLET_TRANSFER_UNITS_MAX: u64 = 10_000;
pub const WALLET_DAILY_UNITS_MAX: u64 = 50_000;

/// Wallet transfers one account may start per minute.
pub const WALLET_TRANSFERS_PER_MINUTE_MAX: u32 = 60;

/// Ledger commands the wallet's writer posts in one batch (one store transaction).
pub const LEDGER_BATCH_COMMANDS_MAX: usize = 4_096;

/// Ledger jobs (one request's commands each) queued for the writer before callers wait.
pub const LEDGER_QUEUE_JOBS_MAX: usize = 16_384;

/// The largest amount of one ledger transfer, minor units (10^15 cents is ten trillion
/// dollars): beyond any payment, small enough that no batch's sums overflow an `i64` column.
pub const LEDGER_AMOUNT_MAX: u128 = 1_000_000_000_000_000;

/// A wallet request's idempotency key, bytes (a UUID fits).
pub const WALLET_KEY_BYTES_MAX: usize = 64;

/// How long a red envelope can be grabbed before the rest goes back, ms (servers may shorten it
/// for tests: `--red-envelope-ttl-secs`).
pub const ENVELOPE_TTL_MS: u64 = 24 * 3_600_000;

/// Envelopes refunded per sweep.
pub const ENVELOPE_SWEEP_MAX: u32 = 256;

/// How long a payout's money stays held while the provider has not answered, ms: a day, so a
/// retry after a crash or an outage finds the hold open; then it is released (servers may
/// shorten it for tests: `--payout-hold-ttl-secs`).
pub const PAYOUT_HOLD_TTL_MS: u64 = 24 * 3_600_000;

/// Expired holds released per sweep.
pub const HOLD_SWEEP_MAX: u32 = 256;

/// How long a money request (or a split bill's share) can be paid, ms.
pub const REQUEST_TTL_MS: u64 = 7 * 24 * 3_600_000;

/// People one split bill asks.
pub const SPLIT_PEOPLE_MAX: usize = 100;

/// Open requests listed for a payer at most (the wallet screen; older ones stay payable in
/// their chats).
pub const REQUESTS_LISTED_MAX: u32 = 200;

/// Shares of one red envelope.
pub const ENVELOPE_SHARES_MAX: u32 = 200;

/// Transfers per wallet history page.
pub const WALLET_HISTORY_PAGE_MAX: u32 = 200;

const _: () = assert!(WALLET_TRANSFER_UNITS_MAX <= WALLET_DAILY_UNITS_MAX);
const _: () = assert!(MESSAGE_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(HANDSHAKE_BYTES_MAX < FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX < WS_MESSAGE_BYTES_MAX);
const _: () = assert!(USERS_PER_REQUEST_MAX <= GROUP_MEMBERS_MAX);
const _: () = assert!(KEY_PACKAGES_PER_UPLOAD_MAX <= KEY_PACKAGES_PER_DEVICE_MAX);

// ---- attachments (encrypted blobs; docs/protocol.md "Attachments")

/// Largest attachment a server accepts by default, bytes of ciphertext. Operators change it with
/// `--blob-bytes-max`; 2 GiB holds a long phone video.
pub const BLOB_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// Attachment storage one account may hold at once by default, bytes of ciphertext (blobs not yet
/// collected: not fetched by every recipient and within retention). `--blob-quota-bytes`.
pub const BLOB_QUOTA_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// Uploads and downloads move in parts of this size: every upload request but the last of a blob
/// carries a whole number of parts, so an interrupted upload resumes at a part boundary and an
/// object store can keep one object per part. Bytes.
pub const BLOB_PART_BYTES: u64 = 1024 * 1024;

/// Largest body of one upload request, bytes: what the server buffers before the write (the body
/// is written only whole, so a cut connection leaves the upload at the previous boundary).
pub const BLOB_UPLOAD_BYTES_MAX: u64 = 8 * BLOB_PART_BYTES;

/// An upload not finished within this is abandoned and collected, ms.
pub const BLOB_UPLOAD_TTL_MS: u64 = 24 * 3_600_000;

/// Plaintext bytes per AEAD chunk of an attachment: each chunk is sealed on its own, so files of
/// any size encrypt and decrypt in constant memory. 64 KiB keeps the tag overhead at 0.02 %.
pub const ATTACHMENT_CHUNK_BYTES: u32 = 64 * 1024;

/// A file name, MIME type or caption inside an attachment message, bytes of UTF-8.
pub const ATTACHMENT_NAME_BYTES_MAX: u32 = 255;
pub const ATTACHMENT_MIME_BYTES_MAX: u32 = 127;

/// An inline thumbnail inside an attachment message, bytes (it travels in the MLS message, which
/// is at most `MESSAGE_BYTES_MAX`).
pub const ATTACHMENT_THUMBNAIL_BYTES_MAX: u32 = 48 * 1024;

const _: () = assert!(BLOB_UPLOAD_BYTES_MAX.is_multiple_of(BLOB_PART_BYTES));
const _: () = assert!(BLOB_BYTES_MAX <= BLOB_QUOTA_BYTES);
const _: () = assert!(ATTACHMENT_THUMBNAIL_BYTES_MAX < MESSAGE_BYTES_MAX / 2);

/// One upload request's body must arrive within this, ms: `BLOB_UPLOAD_BYTES_MAX` at 70 KB/s, a
/// poor mobile link; a client on a slower one sends smaller requests.
pub const BLOB_UPLOAD_TIMEOUT_MS: u64 = 120_000;

/// Blobs one collection pass deletes, so one pass stays short; the next pass takes the rest.
pub const BLOB_SWEEP_LEN_MAX: u32 = 500;

/// The most one read of a stored blob returns, bytes: downloads stream in pieces of this size,
/// so a large blob never sits in the server's memory.
pub const BLOB_READ_BYTES_MAX: u64 = 1024 * 1024;

// ---- photos (anytime-media's photo pipeline, on the sending device)

/// Pixels of a photo a device decodes, width x height: 50 megapixels holds every phone camera;
/// a header asking for more (a decompression bomb) is refused before anything is allocated.
pub const PHOTO_PIXELS_MAX: u64 = 50_000_000;

/// What the image decoders may allocate for one photo, bytes: 50 megapixels of RGBA and room to
/// spare.
pub const PHOTO_ALLOC_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// The longer side of a photo as it is sent, pixels (larger ones are scaled down): sharp on any
/// phone screen, a few hundred kilobytes as JPEG.
pub const PHOTO_SIDE_MAX: u32 = 2560;

/// The longer side of a photo's thumbnail, pixels.
pub const PHOTO_THUMBNAIL_SIDE: u32 = 320;

const _: () = assert!(PHOTO_PIXELS_MAX * 4 <= PHOTO_ALLOC_BYTES_MAX);
