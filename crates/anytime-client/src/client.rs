//! The client's protocol logic: everything between "a frame arrived" and "the user sees a
//! message", and between "the user typed" and "a frame leaves". The network is a [`Transport`]
//! and persistence a [`ClientStore`], both supplied by the shell (CLI natively, wasm in the
//! browser), so this code runs unchanged on both.
//!
//! Order of effects: MLS state and the outbox entry are persisted before a frame that depends on
//! them is sent (a ratchet step or a new epoch must survive a crash), and a message is
//! acknowledged to the server only after it was recorded locally.

use std::collections::BTreeSet;

use anytime_proto::frame::{self, ConvKind, MessageKind, Seq};
use anytime_proto::limits::{COMMIT_ATTEMPTS_MAX, KEY_PACKAGES_LOW};
use anytime_proto::{ClientFrame, ConvId, DeviceId, ErrorCode, MsgId, ServerFrame, UserId};
use async_trait::async_trait;

use crate::content::Content;
use crate::e2ee::{DeviceCrypto, DeviceIdentity, E2eeError, Incoming, OutgoingCommit};

/// One-time key packages kept on the server for this device.
const KEY_PACKAGE_BATCH: usize = 50;
/// How long to wait for the pushes that explain a lost commit race.
const CATCH_UP_WAIT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("the server refused: {code} ({})", code.description())]
    Server { code: ErrorCode },
    #[error("connection failed: {0}")]
    Transport(String),
    #[error(transparent)]
    E2ee(#[from] E2eeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("gave up after {0} attempts to change the group (too many concurrent changes)")]
    CommitContention(u32),
    #[error("this device is not (yet) a member of the encrypted group of conversation {0}; sync and retry")]
    NotInGroup(ConvId),
}

/// Local storage failed (disk full, database locked, unreadable data): the shell's error, as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local storage failed: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub fn new(error: impl std::fmt::Display) -> StoreError {
        StoreError(error.to_string())
    }
}

/// A message in the outbox: encrypted, not yet stored by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub conv: ConvId,
    pub msg_id: MsgId,
    pub ciphertext: Vec<u8>,
    /// What it says, for the local history and to send receipts and edits without waking anyone
    /// (`None` for entries written before the outbox kept it).
    pub content: Option<Content>,
}

/// The network as the client core sees it.
#[async_trait(?Send)]
pub trait Transport {
    /// Sends a request and waits for its answer.
    async fn request(&mut self, frame: ClientFrame) -> Result<ServerFrame, ClientError>;
    /// Sends a frame that has no success answer (acks).
    async fn notify(&mut self, frame: ClientFrame) -> Result<(), ClientError>;
    /// The next push, or `None` after `wait_ms` without one.
    async fn next_push(&mut self, wait_ms: u64) -> Result<Option<ServerFrame>, ClientError>;
}

/// Local persistence as the client core sees it. Every write is one [`Changes`] batch, stored
/// atomically: the MLS state, the history and the outbox can never disagree on disk (a ratchet
/// step saved without the message it sealed, or the reverse, would fork the device's state).
pub trait ClientStore {
    /// Highest seq of `conv` already processed (0 if none).
    fn last_seq(&self, conv: ConvId) -> Result<Seq, StoreError>;
    /// Queued messages in the order they were added.
    fn outbox(&self) -> Result<Vec<Queued>, StoreError>;
    /// Writes `changes` in one transaction: all of it is durable when this returns, or none.
    /// Recorded events go into the conversation's history by the rules of
    /// [`crate::timeline::Effect`].
    fn save(&mut self, changes: Changes<'_>) -> Result<(), StoreError>;
    /// The last `limit` entries of `conv`'s history, oldest first.
    fn history(&self, conv: ConvId, limit: usize) -> Result<Vec<crate::timeline::Entry>, StoreError>;
    /// Every starred entry, oldest first.
    fn starred(&self) -> Result<Vec<(ConvId, crate::timeline::Entry)>, StoreError>;
}

/// One atomic write to the [`ClientStore`].
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// The device's whole MLS state, when it changed.
    pub crypto: Option<Vec<u8>>,
    /// A processed message: recorded so it is never processed twice, with what it produced.
    pub record: Option<Record<'a>>,
    /// An encrypted message queued before it is sent; kept until the server stored it.
    pub outbox_add: Option<OutboxEntry<'a>>,
    /// A queued message the server stored.
    pub outbox_remove: Option<MsgId>,
    /// A change this device makes to its own history ([`crate::timeline::Effect::Star`],
    /// [`crate::timeline::Effect::Hide`]), applied like a recorded event's effect.
    pub local: Option<(ConvId, crate::timeline::Effect)>,
}

/// A processed message: `seq` 0 for this device's own sends (numbered by the server later).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub conv: ConvId,
    pub seq: Seq,
    pub event: Option<&'a Event>,
}

#[derive(Debug, Clone, Copy)]
pub struct OutboxEntry<'a> {
    pub conv: ConvId,
    pub msg_id: MsgId,
    pub ciphertext: &'a [u8],
    pub content: &'a Content,
}

/// What happened, for the UI and the local history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message {
        conv: ConvId,
        seq: Seq,
        msg_id: MsgId,
        sender: DeviceIdentity,
        sent_at_ms: u64,
        content: Content,
        own: bool,
    },
    /// A message this device cannot read (sent before it joined, or corrupted).
    Undecryptable {
        conv: ConvId,
        seq: Seq,
        sender: UserId,
        reason: String,
    },
    GroupChanged {
        conv: ConvId,
        epoch: u64,
        removed_self: bool,
    },
    Joined {
        conv: ConvId,
    },
    ConversationChanged {
        conv: ConvId,
        removed: bool,
    },
    MessagesExpired {
        conv: ConvId,
        up_to_seq: Seq,
    },
    /// This device re-added `device`, whose encryption state had diverged from the group's
    /// (its messages could not be read), with a fresh key package; `epoch` is the group's after.
    DeviceRepaired {
        conv: ConvId,
        device: DeviceIdentity,
        epoch: u64,
    },
    /// This device was removed from the group and added back with fresh keys (a member repaired
    /// its diverged state). Messages sent to it in between may be unreadable here.
    Rejoined {
        conv: ConvId,
        epoch: u64,
    },
}

/// Whether a refused request may succeed later unchanged (the server was busy, shutting down or
/// failing) rather than never (not a member, blocked, too large, a reused id).
fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown | ErrorCode::ServerBusy)
}

/// Conversations an event says need their group compared with the server's membership.
fn membership_changes(events: &[Event]) -> BTreeSet<ConvId> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::ConversationChanged { conv, removed: false }
            | Event::Joined { conv }
            | Event::Rejoined { conv, .. } => Some(*conv),
            _ => None,
        })
        .collect()
}

/// A member device whose current-epoch message failed to open, with its leaf key at the time
/// (a different key later means someone already re-added it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Diverged {
    conv: ConvId,
    device: DeviceIdentity,
    leaf_key: Vec<u8>,
}

/// One device's client: its MLS state and store, and everything a session does with them —
/// catching up, repairing groups, sending with a retry — so the terminal and the browser share
/// one implementation. Shells read state through the accessors below, never the fields.
pub struct Client<S: ClientStore> {
    crypto: DeviceCrypto,
    store: S,
    /// Devices to re-add, found while opening messages (repaired after the push is handled).
    diverged: Vec<Diverged>,
    /// Groups this device was removed from by a commit while still in the conversation: a
    /// Welcome for one of them is a rejoin, shown as such.
    removed_from: BTreeSet<ConvId>,
}

fn refused(frame: ServerFrame) -> ClientError {
    match frame {
        ServerFrame::Error(error) => ClientError::Server { code: error.code },
        other => ClientError::Protocol(format!("{other:?}")),
    }
}

impl<S: ClientStore> Client<S> {
    pub fn new(crypto: DeviceCrypto, store: S) -> Client<S> {
        Client { crypto, store, diverged: Vec::new(), removed_from: BTreeSet::new() }
    }

    pub fn me(&self) -> DeviceIdentity {
        self.crypto.identity()
    }

    /// Gives the store back (a shell closing the profile; a simulation "crashing" the device and
    /// restarting it from what was persisted).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The local store (history, settings the shell keeps beside the core's data).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Conversations whose encrypted group this device is in.
    pub fn groups(&self) -> Vec<ConvId> {
        self.crypto.groups()
    }

    pub fn has_group(&self, conv: ConvId) -> bool {
        self.crypto.has_group(conv)
    }

    /// Processes everything pending, then repairs every group whose devices differ from the
    /// server's membership (membership pushes are ephemeral: a device that was offline when a
    /// contact linked or revoked a device learns it here). Uploads key packages if low first.
    pub async fn catch_up<T: Transport>(&mut self, t: &mut T, idle_ms: u64) -> Result<Vec<Event>, ClientError> {
        self.replenish_key_packages(t).await?;
        let mut events = self.sync(t, idle_ms).await?;
        let mut convs: BTreeSet<ConvId> = self.crypto.groups().into_iter().collect();
        convs.extend(membership_changes(&events));
        for conv in convs {
            events.extend(self.reconcile(t, conv).await?);
        }
        Ok(events)
    }

    /// Handles one push and repairs the groups whose membership it changed.
    pub async fn handle_push_and_repair<T: Transport>(
        &mut self,
        t: &mut T,
        push: ServerFrame,
    ) -> Result<Vec<Event>, ClientError> {
        let mut events = self.handle_push(t, push).await?;
        for conv in membership_changes(&events) {
            events.extend(self.reconcile(t, conv).await?);
        }
        Ok(events)
    }

    /// Sends; if this device is not in the group yet (its Welcome may be on the way), catches
    /// up once and tries again. Returns the seq and what catching up brought.
    pub async fn send_or_catch_up<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        content: Content,
        msg_id: MsgId,
        idle_ms: u64,
    ) -> Result<(Seq, Vec<Event>), ClientError> {
        match self.send(t, conv, content.clone(), msg_id).await {
            Err(ClientError::NotInGroup(_)) => {
                let events = self.catch_up(t, idle_ms).await?;
                let seq = self.send(t, conv, content, msg_id).await?;
                Ok((seq, events))
            }
            other => Ok((other?, Vec::new())),
        }
    }

    fn persist_crypto(&mut self) -> Result<(), ClientError> {
        self.save(Changes { crypto: Some(self.crypto.export()), ..Changes::default() })
    }

    /// Writes one batch of changes atomically.
    pub fn save(&mut self, changes: Changes<'_>) -> Result<(), ClientError> {
        Ok(self.store.save(changes)?)
    }

    /// Stars (or unstars) a message in this device's history; nobody else learns of it.
    pub fn star(&mut self, conv: ConvId, msg_id: MsgId, starred: bool) -> Result<(), ClientError> {
        let effect = crate::timeline::Effect::Star { to: msg_id, starred };
        self.save(Changes { local: Some((conv, effect)), ..Changes::default() })
    }

    /// "Delete for me": the message leaves this device's history only.
    pub fn delete_for_me(&mut self, conv: ConvId, msg_id: MsgId) -> Result<(), ClientError> {
        let effect = crate::timeline::Effect::Hide { to: msg_id };
        self.save(Changes { local: Some((conv, effect)), ..Changes::default() })
    }

    /// Forgets the MLS group of a conversation this device left, durably.
    pub fn forget_group(&mut self, conv: ConvId) -> Result<(), ClientError> {
        self.crypto.drop_group(conv);
        self.removed_from.remove(&conv);
        self.persist_crypto()
    }

    /// Keeps enough one-time key packages (and a last-resort one) on the server.
    pub async fn replenish_key_packages<T: Transport>(&mut self, t: &mut T) -> Result<u32, ClientError> {
        let (count, has_last_resort) = match t.request(frame::GetKeyPackageCount {}.into()).await? {
            ServerFrame::KeyPackageCount(c) => (c.count, c.has_last_resort),
            other => return Err(refused(other)),
        };
        if count >= KEY_PACKAGES_LOW && has_last_resort {
            return Ok(count);
        }
        let packages = self.crypto.key_packages(KEY_PACKAGE_BATCH - count as usize)?;
        let last_resort = if has_last_resort { None } else { Some(self.crypto.last_resort_key_package()?) };
        // The private halves must be on disk before the public halves can be claimed.
        self.persist_crypto()?;
        match t.request(frame::UploadKeyPackages { packages, last_resort }.into()).await? {
            ServerFrame::KeyPackageCount(c) => Ok(c.count),
            other => Err(refused(other)),
        }
    }

    /// Processes pushes until none arrives for `idle_ms`; returns what happened.
    pub async fn sync<T: Transport>(&mut self, t: &mut T, idle_ms: u64) -> Result<Vec<Event>, ClientError> {
        let mut events = Vec::new();
        while let Some(push) = t.next_push(idle_ms).await? {
            events.extend(self.handle_push(t, push).await?);
        }
        self.flush_outbox(t).await?;
        Ok(events)
    }

    /// Handles one push from the server, then re-adds any member device found diverged.
    pub async fn handle_push<T: Transport>(&mut self, t: &mut T, push: ServerFrame) -> Result<Vec<Event>, ClientError> {
        let mut events = self.apply_push(t, push).await?;
        while let Some(diverged) = self.diverged.pop() {
            events.extend(self.repair(t, diverged).await?);
        }
        Ok(events)
    }

    /// One push, without repairs (those commit, and a commit applies pushes while it waits).
    async fn apply_push<T: Transport>(&mut self, t: &mut T, push: ServerFrame) -> Result<Vec<Event>, ClientError> {
        match push {
            ServerFrame::Message(message) => self.handle_message(t, message).await,
            ServerFrame::Welcome(welcome) => {
                let conv = welcome.conv;
                let rejoin = self.crypto.has_group(conv) || self.removed_from.contains(&conv);
                let joined = self.crypto.join(conv, &welcome.payload);
                self.persist_crypto()?;
                if joined.is_ok() {
                    self.requeue(conv)?;
                }
                t.notify(frame::AckWelcome { welcome: welcome.welcome }.into()).await?;
                match joined {
                    Ok(()) if rejoin => {
                        self.removed_from.remove(&conv);
                        let event = Event::Rejoined { conv, epoch: self.crypto.epoch(conv).unwrap_or(0) };
                        self.record_notice(&event)?;
                        Ok(vec![event])
                    }
                    Ok(()) => Ok(vec![Event::Joined { conv }]),
                    // A Welcome we cannot use (key package already used, group re-created):
                    // acknowledged so it is not redelivered; the group will add us again.
                    Err(_) => Ok(Vec::new()),
                }
            }
            ServerFrame::ConversationChanged(changed) => {
                // The group is kept: the server removed the user, but the group drops this
                // device only with a removal commit. If nobody commits it before the user is
                // added back, the group is still ours (nobody will send a Welcome); if somebody
                // does, `reconcile` finds the group behind the server's epoch and lets it go.
                // Messages from before the removal may also still be on their way.
                if changed.removed {
                    self.removed_from.insert(changed.conv);
                }
                Ok(vec![Event::ConversationChanged { conv: changed.conv, removed: changed.removed }])
            }
            ServerFrame::KeyPackagesLow(_) => {
                self.replenish_key_packages(t).await?;
                Ok(Vec::new())
            }
            ServerFrame::MessagesExpired(expired) => {
                Ok(vec![Event::MessagesExpired { conv: expired.conv, up_to_seq: expired.up_to_seq }])
            }
            // Typing, presence and CaughtUp are for the UI shell; nothing to do here.
            _ => Ok(Vec::new()),
        }
    }

    async fn handle_message<T: Transport>(
        &mut self,
        t: &mut T,
        message: frame::Message,
    ) -> Result<Vec<Event>, ClientError> {
        let (conv, seq) = (message.conv, message.seq);
        if seq <= self.store.last_seq(conv)? {
            // Already processed (redelivered after a reconnect): only re-acknowledge.
            t.notify(frame::Ack { conv, seq }.into()).await?;
            return Ok(Vec::new());
        }
        let event = self.open(message);
        // The ratchet step and the message it opened are one write.
        self.save(Changes {
            crypto: Some(self.crypto.export()),
            record: Some(Record { conv, seq, event: event.as_ref() }),
            ..Changes::default()
        })?;
        t.notify(frame::Ack { conv, seq }.into()).await?;
        Ok(event.into_iter().collect())
    }

    /// Decrypts or applies one ordered message.
    fn open(&mut self, message: frame::Message) -> Option<Event> {
        let (conv, seq) = (message.conv, message.seq);
        let undecryptable = |reason: String| Event::Undecryptable { conv, seq, sender: message.sender, reason };
        if !self.crypto.has_group(conv) {
            return match message.kind {
                // Commits from before we joined are history we were never part of.
                MessageKind::Commit { .. } => None,
                MessageKind::Application => Some(undecryptable("sent before this device joined".into())),
            };
        }
        let own = message.sender_device == self.me().device;
        if let (true, MessageKind::Commit { epoch }) = (own, message.kind) {
            if self.crypto.has_pending_commit(conv) && self.crypto.epoch(conv) == Some(epoch) {
                // Our own commit, ordered by the server although its answer never reached us
                // (the connection dropped): it is the one we hold pending — apply it now.
                return match self.crypto.merge_pending(conv) {
                    Ok(()) => Some(Event::GroupChanged { conv, epoch: epoch + 1, removed_self: false }),
                    Err(error) => Some(undecryptable(error.to_string())),
                };
            }
        }
        match self.crypto.process(conv, &message.payload) {
            Ok(Incoming::Application { sender, plaintext }) => {
                if sender.device != message.sender_device || sender.user != message.sender {
                    // The server's routing metadata disagrees with the MLS-authenticated sender.
                    return Some(undecryptable("sender does not match its credential".into()));
                }
                let content = Content::decode(&plaintext).unwrap_or(Content::Unsupported { kind: 0 });
                Some(Event::Message {
                    conv,
                    seq,
                    msg_id: message.msg_id,
                    sender,
                    sent_at_ms: message.sent_at_ms,
                    content,
                    own,
                })
            }
            Ok(Incoming::CommitApplied { removed_self, .. }) => {
                let epoch = self.crypto.epoch(conv).unwrap_or(0);
                if removed_self {
                    self.crypto.drop_group(conv);
                    self.removed_from.insert(conv);
                }
                Some(Event::GroupChanged { conv, epoch, removed_self })
            }
            // Our own messages were recorded when sent; our own commits when accepted.
            Ok(Incoming::Own) | Ok(Incoming::Stale) => None,
            Err(error @ E2eeError::Diverged(_)) => {
                let device = DeviceIdentity { user: message.sender, device: message.sender_device };
                if let (MessageKind::Application, false) = (message.kind, own) {
                    if let Some(leaf_key) = self.crypto.leaf_key(conv, device) {
                        let diverged = Diverged { conv, device, leaf_key };
                        if !self.diverged.contains(&diverged) {
                            self.diverged.push(diverged);
                        }
                    }
                }
                Some(undecryptable(error.to_string()))
            }
            Err(error) => Some(undecryptable(error.to_string())),
        }
    }

    /// Encrypts and sends a message; returns its id and seq once the server stored it.
    pub async fn send<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        content: Content,
        msg_id: MsgId,
    ) -> Result<Seq, ClientError> {
        let ciphertext = self.queue(conv, &content, msg_id)?;
        self.deliver_queued(t, conv, msg_id, ciphertext, Some(content)).await
    }

    /// Encrypts a message into the outbox without sending it (offline): the next
    /// [`Client::flush_outbox`] (every catch-up runs one) sends it. Returns the ciphertext.
    pub fn queue(&mut self, conv: ConvId, content: &Content, msg_id: MsgId) -> Result<Vec<u8>, ClientError> {
        // After "removed", the group kept may be stale by now (see `apply_push`): nothing is
        // encrypted with it until `reconcile` found it current again or a Welcome replaced it.
        if !self.crypto.has_group(conv) || self.removed_from.contains(&conv) {
            return Err(ClientError::NotInGroup(conv));
        }
        let ciphertext = self.crypto.encrypt(conv, &content.encode())?;
        // Persist before send, in one write: the ratchet moved, and the outbox must survive a
        // crash so the exact same ciphertext is resent with the same id.
        self.save(Changes {
            crypto: Some(self.crypto.export()),
            outbox_add: Some(OutboxEntry { conv, msg_id, ciphertext: &ciphertext, content }),
            ..Changes::default()
        })?;
        Ok(ciphertext)
    }

    /// Encrypts the queued messages of `conv` again in the group just joined: the ones queued
    /// in the group it replaces (a stale one, or a copy that had diverged) nobody could read.
    /// Same ids, so one the server did store after all is answered `duplicate`, not sent twice.
    /// Entries from before the outbox kept their content cannot be encrypted again; they go as
    /// they are.
    fn requeue(&mut self, conv: ConvId) -> Result<(), ClientError> {
        for queued in self.store.outbox()?.into_iter().filter(|q| q.conv == conv) {
            let Some(content) = queued.content else { continue };
            let ciphertext = self.crypto.encrypt(conv, &content.encode())?;
            self.save(Changes {
                crypto: Some(self.crypto.export()),
                outbox_add: Some(OutboxEntry {
                    conv,
                    msg_id: queued.msg_id,
                    ciphertext: &ciphertext,
                    content: &content,
                }),
                ..Changes::default()
            })?;
        }
        Ok(())
    }

    /// Resends everything still in the outbox (after a restart or a lost connection).
    /// A message the server refused for good (the chat is gone, the recipient blocked you) is
    /// taken out of the outbox and skipped; it would otherwise block everything behind it.
    pub async fn flush_outbox<T: Transport>(&mut self, t: &mut T) -> Result<(), ClientError> {
        for queued in self.store.outbox()? {
            match self.deliver_queued(t, queued.conv, queued.msg_id, queued.ciphertext, queued.content).await {
                Ok(_) => {}
                Err(ClientError::Server { code }) if !retryable(code) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn deliver_queued<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        msg_id: MsgId,
        ciphertext: Vec<u8>,
        content: Option<Content>,
    ) -> Result<Seq, ClientError> {
        // Receipts, edits and deletions need nobody woken up (Web Push); the server cannot tell.
        let silent = matches!(content, Some(Content::Receipt(_) | Content::Edit(_) | Content::Delete(_)));
        let request = if silent {
            frame::SendSilent { conv, msg_id, payload: ciphertext }.into()
        } else {
            frame::Send { conv, msg_id, payload: ciphertext }.into()
        };
        match t.request(request).await? {
            ServerFrame::Sent(sent) => {
                let event = content.map(|content| Event::Message {
                    conv,
                    seq: sent.seq,
                    msg_id,
                    sender: self.me(),
                    sent_at_ms: 0,
                    content,
                    own: true,
                });
                let record = event.as_ref().map(|event| Record { conv, seq: 0, event: Some(event) });
                self.save(Changes { record, outbox_remove: Some(msg_id), ..Changes::default() })?;
                Ok(sent.seq)
            }
            ServerFrame::Error(error) if !retryable(error.code) => {
                // Sending it again cannot succeed: it leaves the outbox, the caller hears why.
                self.save(Changes { outbox_remove: Some(msg_id), ..Changes::default() })?;
                Err(ClientError::Server { code: error.code })
            }
            other => Err(refused(other)),
        }
    }

    /// Runs an MLS change (add/remove devices) until the server orders it: on a lost race,
    /// applies the winner's commit from the pushes and builds the change again.
    async fn commit<T, F>(&mut self, t: &mut T, conv: ConvId, mut build: F) -> Result<Vec<Event>, ClientError>
    where
        T: Transport,
        F: FnMut(&mut DeviceCrypto) -> Result<Option<(OutgoingCommit, Vec<DeviceId>)>, ClientError>,
    {
        let mut events = self.resolve_pending_commit(t, conv).await?;
        for _ in 0..COMMIT_ATTEMPTS_MAX {
            let epoch = self.crypto.epoch(conv).ok_or(ClientError::NotInGroup(conv))?;
            let Some((outgoing, welcome_devices)) = build(&mut self.crypto)? else { return Ok(events) };
            self.persist_crypto()?;
            let welcome = outgoing
                .welcome
                .filter(|_| !welcome_devices.is_empty())
                .map(|payload| frame::WelcomeOut { devices: welcome_devices, payload });
            let msg_id = MsgId(self.random_id(epoch));
            let request = frame::Commit { conv, epoch, msg_id, commit: outgoing.commit, welcome };
            match t.request(request.into()).await? {
                ServerFrame::Committed(_) => {
                    self.crypto.merge_pending(conv)?;
                    self.persist_crypto()?;
                    return Ok(events);
                }
                ServerFrame::Error(error) if error.code == ErrorCode::EpochMismatch => {
                    self.crypto.discard_pending(conv)?;
                    self.persist_crypto()?;
                    if epoch == 0 {
                        // Our group was never ordered: another device created it first (both
                        // saw the fresh conversation). Its Welcome brings us in; see `establish`.
                        return Err(ClientError::Server { code: ErrorCode::EpochMismatch });
                    }
                    let target = error.epoch.unwrap_or(epoch + 1);
                    while self.crypto.epoch(conv).is_some_and(|e| e < target) {
                        let Some(push) = t.next_push(CATCH_UP_WAIT_MS).await? else { break };
                        events.extend(self.apply_push(t, push).await?);
                    }
                }
                other => {
                    self.crypto.discard_pending(conv)?;
                    self.persist_crypto()?;
                    return Err(refused(other));
                }
            }
        }
        Err(ClientError::CommitContention(COMMIT_ATTEMPTS_MAX))
    }

    /// A commit whose answer was lost (the connection dropped) stays pending in the MLS group
    /// and would block every later change. The server knows whether it ordered it: if its epoch
    /// is past ours, the pushes bring the commits we lack — ours among them, applied in `open`,
    /// or another member's, which replaces ours; if not, ours never arrived and is dropped.
    async fn resolve_pending_commit<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
    ) -> Result<Vec<Event>, ClientError> {
        let mut events = Vec::new();
        if !self.crypto.has_pending_commit(conv) {
            return Ok(events);
        }
        let server_epoch = match t.request(frame::GetConversation { conv }.into()).await? {
            ServerFrame::ConversationInfo(info) => info.epoch,
            other => return Err(refused(other)),
        };
        while self.crypto.has_pending_commit(conv) && self.crypto.epoch(conv).is_some_and(|e| e < server_epoch) {
            let Some(push) = t.next_push(CATCH_UP_WAIT_MS).await? else { break };
            events.extend(self.apply_push(t, push).await?);
        }
        if self.crypto.has_pending_commit(conv) && self.crypto.epoch(conv) == Some(server_epoch) {
            self.crypto.discard_pending(conv)?;
            self.persist_crypto()?;
        }
        Ok(events)
    }

    /// Re-adds a member device whose messages stopped opening (its state forked: before
    /// profiles had one writer, two processes could advance one saved state). Removing it and
    /// adding a fresh key package of it gives it new secrets; it rejoins from the Welcome. Several
    /// members may notice at once: only the first removal happens, the others see a new leaf key.
    async fn repair<T: Transport>(&mut self, t: &mut T, diverged: Diverged) -> Result<Vec<Event>, ClientError> {
        let Diverged { conv, device, leaf_key } = diverged;
        let mut removed = false;
        let mut events = self
            .commit(t, conv, |crypto| {
                if crypto.leaf_key(conv, device).as_deref() != Some(leaf_key.as_slice()) {
                    return Ok(None);
                }
                removed = true;
                Ok(Some((crypto.remove_devices(conv, &[device])?, Vec::new())))
            })
            .await?;
        if !removed {
            return Ok(events);
        }
        // Adds back every device of the user missing from the group, this one included (if
        // the user has no key package left the device stays out until a later reconcile).
        events.extend(self.add_users_to_group(t, conv, &[device.user]).await?);
        let epoch = self.crypto.epoch(conv).unwrap_or(0);
        let event = Event::DeviceRepaired { conv, device, epoch };
        self.record_notice(&event)?;
        events.push(event);
        Ok(events)
    }

    /// Puts a notice about the conversation into its local history (no server seq).
    fn record_notice(&mut self, event: &Event) -> Result<(), ClientError> {
        let conv = match event {
            Event::DeviceRepaired { conv, .. } | Event::Rejoined { conv, .. } => *conv,
            _ => return Ok(()),
        };
        self.save(Changes { record: Some(Record { conv, seq: 0, event: Some(event) }), ..Changes::default() })
    }

    /// A commit id: unique per device and attempt without an RNG in the core.
    fn random_id(&self, epoch: u64) -> [u8; 16] {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.crypto.export());
        hash.update(epoch.to_be_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id
    }

    /// Adds every device of `users` that is not yet in the MLS group of `conv`.
    pub async fn add_users_to_group<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        users: &[UserId],
    ) -> Result<Vec<Event>, ClientError> {
        let me = self.me();
        let mut packages = Vec::new();
        for &user in users {
            match t.request(frame::ClaimKeyPackages { user }.into()).await? {
                ServerFrame::KeyPackages(claimed) => {
                    packages.extend(claimed.packages.into_iter().filter(|p| p.device != me.device))
                }
                other => return Err(refused(other)),
            }
        }
        self.commit(t, conv, |crypto| {
            let present: Vec<DeviceId> = crypto.members(conv).into_iter().map(|m| m.device).collect();
            let new: Vec<_> = packages.iter().filter(|p| !present.contains(&p.device)).collect();
            if new.is_empty() {
                return Ok(None);
            }
            let bytes: Vec<Vec<u8>> = new.iter().map(|p| p.package.clone()).collect();
            let outgoing = crypto.add_devices(conv, &bytes)?;
            Ok(Some((outgoing, new.iter().map(|p| p.device).collect())))
        })
        .await
    }

    /// Removes these devices (revoked ones) from the MLS group of `conv`.
    pub async fn remove_devices<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        devices: Vec<DeviceIdentity>,
    ) -> Result<Vec<Event>, ClientError> {
        self.commit(t, conv, |crypto| {
            let present = crypto.members(conv);
            let leaving: Vec<DeviceIdentity> = devices.iter().copied().filter(|d| present.contains(d)).collect();
            if leaving.is_empty() {
                return Ok(None);
            }
            Ok(Some((crypto.remove_devices(conv, &leaving)?, Vec::new())))
        })
        .await
    }

    /// Removes every device of `user` from the MLS group of `conv`.
    pub async fn remove_user_from_group<T: Transport>(
        &mut self,
        t: &mut T,
        conv: ConvId,
        user: UserId,
    ) -> Result<Vec<Event>, ClientError> {
        let devices = self.crypto.members(conv).into_iter().filter(|m| m.user == user).collect();
        self.remove_devices(t, conv, devices).await
    }

    /// Makes sure the MLS group of a conversation the server just reported exists: the device
    /// that finds a fresh conversation (epoch 0) starts the group and adds every member device;
    /// a device that loses that race waits for its Welcome.
    pub async fn establish<T: Transport>(
        &mut self,
        t: &mut T,
        info: &frame::ConversationInfo,
    ) -> Result<Vec<Event>, ClientError> {
        if self.crypto.has_group(info.conv) {
            // Claim key packages only for users with a device missing from the group: a claim
            // uses one up, and the server rate-limits them.
            let present: BTreeSet<DeviceId> = self.crypto.members(info.conv).into_iter().map(|m| m.device).collect();
            let users: Vec<UserId> = info
                .members
                .iter()
                .filter(|m| m.devices.iter().any(|d| !present.contains(d)))
                .map(|m| m.user)
                .collect();
            if users.is_empty() {
                return Ok(Vec::new());
            }
            return self.add_users_to_group(t, info.conv, &users).await;
        }
        if info.epoch != 0 {
            return self.wait_for_join(t, info.conv).await;
        }
        self.crypto.create_group(info.conv)?;
        let users: Vec<UserId> = info.members.iter().map(|m| m.user).collect();
        match self.add_users_to_group(t, info.conv, &users).await {
            Ok(events) => Ok(events),
            Err(ClientError::Server { code: ErrorCode::EpochMismatch }) => self.wait_for_join(t, info.conv).await,
            Err(error) => Err(error),
        }
    }

    async fn wait_for_join<T: Transport>(&mut self, t: &mut T, conv: ConvId) -> Result<Vec<Event>, ClientError> {
        // Our own group attempt (if any) lost: forget it and take the winner's Welcome.
        if self.crypto.epoch(conv) == Some(0) {
            self.crypto.drop_group(conv);
        }
        let mut events = Vec::new();
        while !self.crypto.has_group(conv) {
            let Some(push) = t.next_push(CATCH_UP_WAIT_MS).await? else {
                return Err(ClientError::NotInGroup(conv));
            };
            events.extend(self.handle_push(t, push).await?);
        }
        Ok(events)
    }

    /// Brings the MLS group of `conv` in line with the server's membership: adds member devices
    /// that are missing (new members, new or approved devices) and removes devices that are gone
    /// (left, removed, revoked). Membership pushes are ephemeral, so every client runs this after
    /// catching up and on each `ConversationChanged`.
    pub async fn reconcile<T: Transport>(&mut self, t: &mut T, conv: ConvId) -> Result<Vec<Event>, ClientError> {
        let info = match t.request(frame::GetConversation { conv }.into()).await? {
            ServerFrame::ConversationInfo(info) => info,
            // No longer a member: nothing to repair. The group is kept (see `apply_push`): pushes
            // from before the removal may still be queued behind this answer.
            _ => {
                if self.crypto.has_group(conv) {
                    self.removed_from.insert(conv);
                }
                return Ok(Vec::new());
            }
        };
        let mut events = self.drop_stale_group(t, &info).await?;
        if self.crypto.has_group(conv) {
            // A member again, and the group kept is at the server's epoch: still ours.
            self.removed_from.remove(&conv);
        }
        if !self.crypto.has_group(conv) {
            if info.epoch == 0 {
                return self.establish(t, &info).await;
            }
            return Ok(Vec::new());
        }
        let server_devices: BTreeSet<DeviceId> = info.members.iter().flat_map(|m| m.devices.iter().copied()).collect();
        let server_users: BTreeSet<UserId> = info.members.iter().map(|m| m.user).collect();
        let gone: Vec<DeviceIdentity> =
            self.crypto.members(conv).into_iter().filter(|m| !server_devices.contains(&m.device)).collect();
        let gone_users: BTreeSet<UserId> = gone.iter().map(|m| m.user).filter(|u| !server_users.contains(u)).collect();
        for user in gone_users {
            events.extend(self.remove_user_from_group(t, conv, user).await?);
        }
        // Users who stay but lost a device (revoked): remove just those devices.
        let leaving: Vec<DeviceIdentity> = gone.into_iter().filter(|m| server_users.contains(&m.user)).collect();
        if !leaving.is_empty() {
            events.extend(self.remove_devices(t, conv, leaving).await?);
        }
        events.extend(self.establish(t, &info).await?);
        Ok(events)
    }

    /// A member's group that stays behind the server's epoch once everything queued for this
    /// device has been applied missed commits: the user was out of the conversation meanwhile
    /// (removed and added back while this device was away, so the commits of that time were
    /// never its to read). Nothing can be read or sent with it any more: it is dropped, and the
    /// member that re-adds the device sends a Welcome, taken as a rejoin.
    async fn drop_stale_group<T: Transport>(
        &mut self,
        t: &mut T,
        info: &frame::ConversationInfo,
    ) -> Result<Vec<Event>, ClientError> {
        let conv = info.conv;
        let mut events = Vec::new();
        while self.crypto.epoch(conv).is_some_and(|e| e < info.epoch) {
            let Some(push) = t.next_push(CATCH_UP_WAIT_MS).await? else { break };
            events.extend(self.apply_push(t, push).await?);
        }
        if self.crypto.epoch(conv).is_some_and(|e| e < info.epoch) {
            self.crypto.drop_group(conv);
            self.removed_from.insert(conv);
            self.persist_crypto()?;
        }
        Ok(events)
    }

    /// The safety number between this user and `peer`, over both users' device keys as they are
    /// in the MLS group of `conv` (their direct chat). Changes when either adds or loses a device.
    pub fn safety_number_with(&self, conv: ConvId, peer: UserId) -> crate::safety::SafetyNumber {
        let me = self.me().user;
        let keys = self.crypto.member_keys(conv);
        let of = |user: UserId| -> Vec<Vec<u8>> {
            keys.iter().filter(|(id, _)| id.user == user).map(|(_, k)| k.clone()).collect()
        };
        crate::safety::safety_number((me, &of(me)), (peer, &of(peer)))
    }

    pub fn is_direct(info: &frame::ConversationInfo) -> bool {
        info.kind == ConvKind::Direct
    }
}
