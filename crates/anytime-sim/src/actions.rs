//! What a step does, each through the requests a real shell sends: a device sends, syncs,
//! crashes; a user links a new device (login, then approval from one it has) or revokes one; the
//! churn group's admin adds or removes a member. After a request that changes accounts or
//! membership the server's storage is read at once: its answer may have been lost, and the
//! boundary of the change is the conversation's last seq at that moment.

use anytime_client::content::Text;
use anytime_client::e2ee::DeviceCrypto;
use anytime_client::{Client, ClientError, Content, Transport};
use anytime_proto::http::LoginRequest;
use anytime_proto::{frame, ConvId, ErrorCode, MsgId, ServerFrame, UserId};
use anytime_server_core::ServerStore;

use crate::link::Link;
use crate::{DeviceState, Sent, SimStore, Violation, World};

/// Devices (approved or waiting) a user has at most; the server allows more.
const DEVICES_PER_USER: usize = 2;
/// Chance in percent that a sender's shell handled the pushes that arrived before the user
/// pressed send (otherwise it encrypts with what it had: a commit may be in flight).
const SENDER_UP_TO_DATE_PERCENT: u64 = 80;

/// What a shell's loop does with what arrived: every push through the core, each membership
/// change followed by a repair of the group (the web client and `anytime follow` do this).
async fn drain(client: &mut Client<SimStore>, link: &mut Link) -> Result<(), ClientError> {
    while let Some(push) = link.next_push(0).await? {
        client.handle_push_and_repair(link, push).await?;
    }
    Ok(())
}

fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::RateLimited | ErrorCode::ServerBusy | ErrorCode::Internal | ErrorCode::ShuttingDown)
}

impl World {
    pub(crate) async fn send(&mut self, i: usize) -> Result<(), Violation> {
        let user = self.devices[i].user;
        // The conversations this device shows: where its user is a member, and groups it still
        // holds after its user was removed (it may not have heard yet; the server must refuse).
        let client_groups = self.devices[i].client.as_ref().map(|c| c.groups()).unwrap_or_default();
        let convs: Vec<ConvId> = self
            .convs
            .iter()
            .copied()
            .filter(|c| self.membership.is_member(user, *c) || client_groups.contains(c))
            .collect();
        let Some(&conv) = convs.get(self.rng.borrow_mut().below(convs.len().max(1))) else { return Ok(()) };
        let mut id = [0u8; 16];
        self.rng.borrow_mut().fill(&mut id);
        let msg_id = MsgId(id);
        let body = format!("m{}-{}", self.config.seed, self.step);
        let up_to_date = self.rng.borrow_mut().chance(SENDER_UP_TO_DATE_PERCENT);
        let tenure = self.membership.tenure(user, conv);
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        if up_to_date {
            if let Err(error) = drain(client, &mut device.link).await {
                return self.settle(i, "handling pushes before sending", Err(error));
            }
        }
        let content = Content::Text(Text { body: body.clone(), mentions: Vec::new() });
        let result = client.send(&mut device.link, conv, content, msg_id).await;
        let (device_id, member) = (device.id, tenure.1);
        if matches!(result, Err(ClientError::NotInGroup(_))) {
            // Nothing was encrypted: its group has not added this device yet.
            return Ok(());
        }
        self.report.sends += 1;
        let seq = result.as_ref().ok().copied();
        self.sent.push(Sent { conv, msg_id, device: device_id, body, seq, tenure });
        match result {
            Err(ClientError::Server { code }) if !retryable(code) && !member => Ok(()),
            Err(ClientError::Server { code }) if !retryable(code) => {
                Err(self
                    .violation(format!("device {i} sending to {conv}, where its user is a member: refused: {code}")))
            }
            other => self.settle(i, "sending", other.map(|_| ())),
        }
    }

    pub(crate) async fn sync(&mut self, i: usize) -> Result<(), Violation> {
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let mut result = drain(client, &mut device.link).await;
        if result.is_ok() {
            // A lost send stays in the outbox and goes again here.
            result = client.flush_outbox(&mut device.link).await;
        }
        self.settle(i, "syncing", result)
    }

    /// The device's process dies: it restarts from what its store persisted, nothing else.
    pub(crate) async fn crash_device(&mut self, i: usize) -> Result<(), Violation> {
        self.report.device_crashes += 1;
        let device = &mut self.devices[i];
        device.link.sever();
        let Some(client) = device.client.take() else { return Ok(()) };
        let store = client.into_store();
        let Some(state) = store.persisted_crypto() else {
            return Err(self.violation(format!("device {i} persisted no encryption state")));
        };
        let crypto = DeviceCrypto::import(&state).map_err(|e| self.violation(format!("device {i} restart: {e}")))?;
        self.devices[i].client = Some(Client::new(crypto, store));
        Ok(())
    }

    /// The user of device `i` logs in on a new device (pending, with a link code) and approves
    /// it from device `i`, as `anytime login` + `anytime approve CODE` do. A user with a device
    /// still waiting approves that one instead.
    pub(crate) async fn link_device(&mut self, i: usize) -> Result<(), Violation> {
        let Some(u) = self.user_index(self.devices[i].user) else { return Ok(()) };
        let alive: Vec<usize> = self.users[u]
            .devices
            .iter()
            .copied()
            .filter(|d| matches!(self.devices[*d].state, DeviceState::Active | DeviceState::Pending { .. }))
            .collect();
        if let Some(&pending) = alive.iter().find(|d| matches!(self.devices[**d].state, DeviceState::Pending { .. })) {
            return self.approve(i, pending).await;
        }
        if alive.len() >= DEVICES_PER_USER {
            return self.sync(i).await;
        }
        let request = LoginRequest {
            username: self.users[u].username.clone(),
            password: self.users[u].password.clone(),
            device_name: format!("sim{}", self.devices.len()),
        };
        let session = match self.core.login(std::net::Ipv4Addr::LOCALHOST.into(), request).await {
            Ok(session) => session,
            Err(ErrorCode::RateLimited) => {
                self.report.refused_for_now += 1;
                return Ok(());
            }
            Err(code) => return Err(self.violation(format!("user{u} cannot log in on a new device: {code}"))),
        };
        let Some(code) = session.link_code.clone() else {
            return Err(self.violation(format!("a new device of user{u}, who has one, needs no approval")));
        };
        let pending = self.add_device(u, session, DeviceState::Pending { code })?;
        // It cannot connect before it is approved.
        self.reconnect(pending).await?;
        self.approve(i, pending).await
    }

    /// A pending device's user approves it from a connected device it has (after a lost answer).
    pub(crate) async fn approve_pending(&mut self, pending: usize) -> Result<(), Violation> {
        let user = self.devices[pending].user;
        let approvers: Vec<usize> = (0..self.devices.len())
            .filter(|d| {
                self.devices[*d].user == user && self.devices[*d].is_active() && self.devices[*d].link.connected()
            })
            .collect();
        let Some(&approver) = approvers.get(self.rng.borrow_mut().below(approvers.len().max(1))) else { return Ok(()) };
        self.approve(approver, pending).await
    }

    async fn approve(&mut self, approver: usize, pending: usize) -> Result<(), Violation> {
        let DeviceState::Pending { code } = self.devices[pending].state.clone() else { return Ok(()) };
        let (user, id) = (self.devices[pending].user, self.devices[pending].id);
        let answer = self.devices[approver].link.request(frame::ApproveDevice { code }.into()).await;
        let devices = self.store.devices(user).await.map_err(|e| self.violation(e.to_string()))?;
        let approved = devices.iter().any(|d| d.id == id && d.approved);
        if approved {
            self.trace(|| format!("device {pending} ({id}) approved"));
            self.devices[pending].state = DeviceState::Active;
            self.report.links += 1;
            for (conv, seq) in self.last_seqs().await? {
                self.membership.approved(id, conv, seq);
            }
        }
        match (answer, approved) {
            (Ok(ServerFrame::Done(_)), true) => {}
            (Err(ClientError::Transport(_)), _) => self.report.lost_requests += 1,
            (Ok(ServerFrame::Error(error)), false) if error.code == ErrorCode::LinkCodeInvalid => {
                // Waited longer than the code lives: that login is dead.
                self.devices[pending].state = DeviceState::Abandoned;
                return Ok(());
            }
            (Ok(ServerFrame::Error(error)), false) if retryable(error.code) => self.report.refused_for_now += 1,
            (other, approved) => {
                return Err(self.violation(format!(
                    "device {approver} approving device {pending}: {other:?}, approved: {approved}"
                )))
            }
        }
        if !approved {
            return Ok(());
        }
        // Its user runs its first sync right away (what `anytime approve` tells them to do).
        self.reconnect(pending).await
    }

    /// The user of device `i` revokes another of its devices from `i`, then repairs every group
    /// `i` is in (as `anytime revoke` does); the others repair theirs when told.
    pub(crate) async fn revoke_sibling(&mut self, i: usize) -> Result<(), Violation> {
        let user = self.devices[i].user;
        let siblings: Vec<usize> = (0..self.devices.len())
            .filter(|d| *d != i && self.devices[*d].user == user && self.devices[*d].is_active())
            .collect();
        let Some(&revoked) = siblings.get(self.rng.borrow_mut().below(siblings.len().max(1))) else {
            return self.sync(i).await;
        };
        let id = self.devices[revoked].id;
        let answer = self.devices[i].link.request(frame::RevokeDevice { device: id }.into()).await;
        let devices = self.store.devices(user).await.map_err(|e| self.violation(e.to_string()))?;
        let gone = !devices.iter().any(|d| d.id == id);
        if gone {
            self.trace(|| format!("device {revoked} ({id}) revoked"));
            self.devices[revoked].state = DeviceState::Revoked;
            self.report.revocations += 1;
            for (conv, seq) in self.last_seqs().await? {
                self.membership.revoked(id, conv, seq);
            }
        }
        if self.lost_or_refused(&answer, gone) {
            return Ok(());
        }
        match (answer, gone) {
            (Ok(ServerFrame::Done(_)), true) => {}
            (other, gone) => {
                return Err(self.violation(format!("device {i} revoking device {revoked}: {other:?}, gone: {gone}")))
            }
        }
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        for conv in client.groups() {
            let result = client.reconcile(&mut device.link, conv).await.map(|_| ());
            if result.is_err() {
                return self.settle(i, "removing a revoked device", result);
            }
        }
        Ok(())
    }

    /// A revoked device's process still runs: it keeps trying, and must get nothing.
    pub(crate) async fn haunt(&mut self, i: usize) -> Result<(), Violation> {
        if self.devices[i].link.connected() {
            return self.sync(i).await;
        }
        self.reconnect(i).await
    }

    /// The churn group's admin, on one of its devices, adds a user who is not a member or
    /// removes one who is (keeping one besides itself).
    pub(crate) async fn change_membership(&mut self) -> Result<(), Violation> {
        let Some((conv, admin)) = self.churn else { return Ok(()) };
        let admin_devices: Vec<usize> = (0..self.devices.len())
            .filter(|d| {
                let device = &self.devices[*d];
                device.user == admin
                    && device.is_active()
                    && device.link.connected()
                    && device.client.as_ref().is_some_and(|c| c.has_group(conv))
            })
            .collect();
        let Some(&a) = admin_devices.get(self.rng.borrow_mut().below(admin_devices.len().max(1))) else {
            return Ok(());
        };
        let members = self.members(conv).await?;
        let outsiders: Vec<UserId> = self.users.iter().map(|u| u.id).filter(|u| !members.contains(u)).collect();
        let removable: Vec<UserId> = members.iter().copied().filter(|u| *u != admin).collect();
        let add = match (outsiders.is_empty(), removable.len() <= 1) {
            (true, true) => return Ok(()),
            (true, false) => false,
            (false, true) => true,
            (false, false) => self.rng.borrow_mut().chance(50),
        };
        if add {
            let user = outsiders[self.rng.borrow_mut().below(outsiders.len())];
            self.add_member(a, conv, user).await
        } else {
            let user = removable[self.rng.borrow_mut().below(removable.len())];
            self.remove_member(a, conv, user).await
        }
    }

    /// `AddMembers`, then the admin's device adds the new member's devices to the group (as
    /// `anytime add` does).
    /// An answer that leaves nothing to check: the request or its answer was lost, or the server
    /// refused for now and indeed changed nothing. Counts it; `true` ends the step quietly.
    fn lost_or_refused(&mut self, answer: &Result<ServerFrame, ClientError>, changed: bool) -> bool {
        match answer {
            Err(ClientError::Transport(_)) => {
                self.report.lost_requests += 1;
                true
            }
            Ok(ServerFrame::Error(error)) if !changed && retryable(error.code) => {
                self.report.refused_for_now += 1;
                true
            }
            _ => false,
        }
    }

    async fn add_member(&mut self, a: usize, conv: ConvId, user: UserId) -> Result<(), Violation> {
        let answer = self.devices[a].link.request(frame::AddMembers { conv, users: vec![user] }.into()).await;
        let member = self.members(conv).await?.contains(&user);
        if member {
            let seq = self.last_seqs().await?.get(&conv).copied().unwrap_or(0);
            self.trace(|| format!("{user} added to {conv} at seq {seq}"));
            self.membership.joined(user, conv, seq);
            self.report.membership_changes += 1;
        }
        if self.lost_or_refused(&answer, member) {
            return Ok(());
        }
        let info = match (answer, member) {
            (Ok(ServerFrame::ConversationInfo(info)), true) => info,
            (other, member) => {
                return Err(self.violation(format!("device {a} adding {user} to {conv}: {other:?}, member: {member}")))
            }
        };
        let device = &mut self.devices[a];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let result = client.establish(&mut device.link, &info).await.map(|_| ());
        self.settle(a, "adding a member's devices", result)
    }

    /// `RemoveMember`, then the admin's device removes the member's devices from the group (as
    /// `anytime remove` does).
    async fn remove_member(&mut self, a: usize, conv: ConvId, user: UserId) -> Result<(), Violation> {
        let answer = self.devices[a].link.request(frame::RemoveMember { conv, user }.into()).await;
        let member = self.members(conv).await?.contains(&user);
        if !member {
            let seq = self.last_seqs().await?.get(&conv).copied().unwrap_or(0);
            self.trace(|| format!("{user} removed from {conv} at seq {seq}"));
            self.membership.left(user, conv, seq);
            self.report.membership_changes += 1;
        }
        if self.lost_or_refused(&answer, !member) {
            return Ok(());
        }
        match (answer, member) {
            (Ok(ServerFrame::Done(_)), false) => {}
            (other, member) => {
                return Err(
                    self.violation(format!("device {a} removing {user} from {conv}: {other:?}, member: {member}"))
                )
            }
        }
        let device = &mut self.devices[a];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let result = client.remove_user_from_group(&mut device.link, conv, user).await.map(|_| ());
        self.settle(a, "removing a member's devices", result)
    }
}
