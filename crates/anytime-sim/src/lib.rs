//! Deterministic simulation of Anytime (in the spirit of TigerBeetle's VOPR and FoundationDB's
//! simulator): the real server core (`Session`s over the in-memory store) and real client cores
//! (MLS included) in one thread, driven step by step by one seeded RNG. Steps: sends, syncs,
//! lost requests and lost answers, disconnects and reconnects, device crashes (restart from the
//! persisted state), server crashes (all sessions gone, storage kept), devices linked (login,
//! approval by a device of the same user) and revoked, and members added to and removed from a
//! group by its admin. After every step the invariants are checked; at the end every device
//! catches up and every message must have arrived exactly once everywhere it should.
//!
//! A run is a pure function of its `Config`: a failing seed replays the same run. (The MLS
//! ciphertexts differ between runs — openmls draws its own randomness — but nothing the run
//! decides depends on their bytes.)

mod actions;
mod checks;
mod env;
mod link;
mod model;
mod rng;
mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_client::{Client, ClientError, Transport};
use anytime_proto::frame::{self, Seq};
use anytime_proto::http::{RegisterRequest, SessionResponse};
use anytime_proto::{ConvId, DeviceId, ErrorCode, MsgId, ServerFrame, UserId};
use anytime_server_core::{Config as CoreConfig, Metrics, ServerCore, ServerStore};
use anytime_store_memory::MemoryStore;

use crate::env::SimEnv;
use crate::link::{Link, Tap};
use crate::model::{Logs, Membership};
use crate::rng::Rng;
pub use crate::store::{Fault, SimStore};

/// Rounds of "everyone reconnects and catches up" at the end of a run, at most: it stops after
/// a round in which the server ordered nothing new (every device then has everything).
const QUIESCE_ROUNDS_MAX: usize = 12;
/// Chance in percent that an offline device, when it is its turn, comes back.
const RECONNECT_PERCENT: usize = 60;
/// Chance in percent that a step goes to a revoked device (which must get nothing).
const HAUNT_PERCENT: u64 = 5;
/// Virtual time between two steps is up to this long.
const STEP_MS_MAX: usize = 400;
/// Virtual time each quiesce round lets pass (rate limits refill, as they would while people wait).
const QUIESCE_ROUND_MS: u64 = 60_000;

/// One simulation run.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub users: usize,
    pub steps: usize,
    /// Chance in percent that a request or its answer is lost.
    pub network_faults: u64,
    /// A deliberately broken rule, to show the checks catch it.
    pub fault: Option<Fault>,
    /// Print every step to stderr (to follow a failing seed).
    pub trace: bool,
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config { seed, users: 4, steps: 300, network_faults: 3, fault: None, trace: false }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub sends: usize,
    /// (device, message) pairs checked at the end: decrypted exactly once, as sent.
    pub deliveries: usize,
    pub lost_requests: usize,
    pub reconnects: usize,
    pub device_crashes: usize,
    pub server_crashes: usize,
    /// Devices linked: logged in, then approved by another device of the same user.
    pub links: usize,
    pub revocations: usize,
    /// Members added to or removed from the churn group by its admin.
    pub membership_changes: usize,
    /// Messages a device received but could not read because it was not in the group when they
    /// were made (sent before it joined, or by a member that had not applied the commit adding
    /// it yet): expected, counted.
    pub not_in_group: usize,
    /// Requests the server refused for now (rate limits) and the client will retry.
    pub refused_for_now: usize,
}

/// A broken invariant: which, where, at which step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub step: usize,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {} step {}: {}", self.seed, self.step, self.what)
    }
}

impl std::error::Error for Violation {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceState {
    /// Logged in, waiting for a device of its user to approve `code`.
    Pending {
        code: String,
    },
    Active,
    Revoked,
    /// Its link code expired before anyone approved it.
    Abandoned,
}

struct Device {
    user: UserId,
    id: DeviceId,
    token: String,
    state: DeviceState,
    client: Option<Client<SimStore>>,
    link: Link,
    /// Records of the client's store already checked.
    checked: usize,
    /// Per conversation, the last seq processed (order check).
    last_seq: BTreeMap<ConvId, Seq>,
    /// Messages of other devices decrypted, with where and what (exactly-once check).
    read: BTreeMap<MsgId, (ConvId, Seq, String)>,
}

impl Device {
    fn is_active(&self) -> bool {
        self.state == DeviceState::Active
    }
}

struct User {
    id: UserId,
    username: String,
    password: String,
    /// Indices into `World::devices`.
    devices: Vec<usize>,
}

/// A message a user sent: it must reach the server, and every device entitled to it exactly once.
struct Sent {
    conv: ConvId,
    msg_id: MsgId,
    device: DeviceId,
    body: String,
    /// The seq the server answered with, when the answer arrived.
    seq: Option<Seq>,
    /// The sender's user's (joins, member) in the conversation when sent: if this changed,
    /// the server may have refused the message for good.
    tenure: (usize, bool),
}

struct World {
    config: Config,
    env: Arc<SimEnv>,
    store: Arc<MemoryStore>,
    core: Arc<ServerCore>,
    rng: Rc<RefCell<Rng>>,
    tap: Tap,
    users: Vec<User>,
    devices: Vec<Device>,
    /// Every conversation of the run, in creation order.
    convs: Vec<ConvId>,
    /// The group whose members change during the run, and its admin.
    churn: Option<(ConvId, UserId)>,
    logs: Logs,
    membership: Membership,
    /// Per conversation, the log entries whose senders were checked.
    senders_checked: BTreeMap<ConvId, Seq>,
    sent: Vec<Sent>,
    report: Report,
    step: usize,
}

fn core_config() -> CoreConfig {
    // Cheap password hashing: the run is about delivery, not argon2.
    CoreConfig { argon2_cost: (64, 1), ..CoreConfig::default() }
}

/// Runs one simulation; `Err` names the first broken invariant.
pub fn run(config: Config) -> Result<Report, Violation> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(|e| Violation {
        seed: config.seed,
        step: 0,
        what: format!("no runtime: {e}"),
    })?;
    runtime.block_on(async move {
        let mut world = World::new(config).await?;
        world.setup().await?;
        for step in 1..=world.config.steps {
            world.step = step;
            world.step_once().await?;
            world.refresh().await?;
            world.check_step()?;
        }
        world.step += 1;
        world.quiesce().await?;
        world.refresh().await?;
        world.check_end().await?;
        Ok(world.report)
    })
}

impl World {
    /// For `--trace`: one line to stderr.
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("  {}", what());
        }
    }

    fn violation(&self, what: impl Into<String>) -> Violation {
        Violation { seed: self.config.seed, step: self.step, what: what.into() }
    }

    async fn new(config: Config) -> Result<World, Violation> {
        let env = Arc::new(SimEnv::new(config.seed));
        let store = Arc::new(MemoryStore::new());
        let core = Arc::new(ServerCore::new(store.clone(), env.clone(), Arc::new(Metrics::default()), core_config()));
        let rng = Rc::new(RefCell::new(Rng::new(config.seed)));
        let mut world = World {
            config,
            env,
            store,
            core,
            rng,
            tap: Tap::default(),
            users: Vec::new(),
            devices: Vec::new(),
            convs: Vec::new(),
            churn: None,
            logs: Logs::default(),
            membership: Membership::default(),
            senders_checked: BTreeMap::new(),
            sent: Vec::new(),
            report: Report::default(),
            step: 0,
        };
        for i in 0..world.config.users {
            let request = RegisterRequest {
                username: format!("user{i}"),
                password: format!("password-{i}"),
                device_name: "sim".into(),
            };
            let session = world
                .core
                .register(std::net::Ipv4Addr::LOCALHOST.into(), request.clone())
                .await
                .map_err(|code| world.violation(format!("register: {code}")))?;
            let user = User {
                id: session.user_id,
                username: request.username,
                password: request.password,
                devices: Vec::new(),
            };
            world.users.push(user);
            world.add_device(i, session, DeviceState::Active)?;
        }
        Ok(world)
    }

    /// A device of user `u` with a fresh MLS identity and an empty store; returns its index.
    fn add_device(&mut self, u: usize, session: SessionResponse, state: DeviceState) -> Result<usize, Violation> {
        let identity = DeviceIdentity { user: session.user_id, device: session.device_id };
        let crypto = DeviceCrypto::new(identity).map_err(|e| self.violation(format!("keys: {e}")))?;
        let index = self.devices.len();
        self.devices.push(Device {
            user: session.user_id,
            id: session.device_id,
            token: session.token,
            state,
            client: Some(Client::new(crypto, SimStore::new(self.config.fault))),
            link: {
                let mut link = Link::new(self.rng.clone(), self.tap.clone());
                link.trace = self.config.trace.then_some(index);
                link
            },
            checked: 0,
            last_seq: BTreeMap::new(),
            read: BTreeMap::new(),
        });
        self.users[u].devices.push(index);
        Ok(index)
    }

    /// Everyone online; one group of all users, one group whose members will change (its
    /// creator, user 0, is the admin) and a direct chat between neighbours; no faults.
    async fn setup(&mut self) -> Result<(), Violation> {
        for i in 0..self.devices.len() {
            self.reconnect(i).await?;
        }
        let everyone: Vec<UserId> = self.users.iter().map(|u| u.id).collect();
        let group = frame::CreateGroup { name: "sim".into(), members: everyone[1..].to_vec() };
        self.create(0, group.into(), &everyone).await?;
        if everyone.len() >= 3 {
            let members = everyone[..3].to_vec();
            let group = frame::CreateGroup { name: "churn".into(), members: members[1..].to_vec() };
            let conv = self.create(0, group.into(), &members).await?;
            self.churn = Some((conv, everyone[0]));
        }
        for i in 0..self.devices.len().saturating_sub(1) {
            let pair = [self.devices[i].user, self.devices[i + 1].user];
            self.create(i, frame::CreateDirect { peer: pair[1] }.into(), &pair).await?;
        }
        self.quiesce().await?;
        for device in &mut self.devices {
            device.link.fault_percent = self.config.network_faults;
        }
        Ok(())
    }

    async fn create(
        &mut self,
        i: usize,
        request: anytime_proto::ClientFrame,
        members: &[UserId],
    ) -> Result<ConvId, Violation> {
        let device = &mut self.devices[i];
        let info = match device.link.request(request).await {
            Ok(ServerFrame::ConversationInfo(info)) => info,
            other => return Err(self.violation(format!("creating a conversation: {other:?}"))),
        };
        let device = &mut self.devices[i];
        if let Some(client) = device.client.as_mut() {
            let result = client.establish(&mut device.link, &info).await.map(|_| ());
            self.settle(i, "establishing", result)?;
        }
        self.convs.push(info.conv);
        self.logs.track(info.conv);
        for user in members {
            self.membership.joined(*user, info.conv, 0);
        }
        Ok(info.conv)
    }

    /// Connects device `i` and catches up. A revoked or pending device must be refused.
    async fn reconnect(&mut self, i: usize) -> Result<(), Violation> {
        let core = self.core.clone();
        let device = &mut self.devices[i];
        let faults = std::mem::take(&mut device.link.fault_percent);
        let connected = device.link.connect(&core, &device.token).await;
        device.link.fault_percent = faults;
        let state = device.state.clone();
        match (connected, state) {
            (Ok(()), DeviceState::Active) => {
                self.report.reconnects += 1;
                self.catch_up(i).await
            }
            (Ok(()), state) => Err(self.violation(format!("device {i} ({state:?}) was let in"))),
            (Err(ClientError::Server { code: ErrorCode::InvalidToken }), DeviceState::Revoked) => Ok(()),
            (Err(ClientError::Server { code: ErrorCode::DeviceNotApproved }), DeviceState::Pending { .. }) => Ok(()),
            (Err(ClientError::Server { code: ErrorCode::LinkCodeInvalid }), DeviceState::Abandoned) => Ok(()),
            (Err(error), state) => Err(self.violation(format!("device {i} ({state:?}) cannot connect: {error}"))),
        }
    }

    async fn catch_up(&mut self, i: usize) -> Result<(), Violation> {
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let result = client.catch_up(&mut device.link, 0).await.map(|_| ());
        self.settle(i, "catching up", result)
    }

    /// What the run tolerates from a client: a lost connection, a request refused for now
    /// (counted, retried later), a device not in a group yet (someone adds it); anything else
    /// breaks an invariant.
    fn settle(&mut self, i: usize, doing: &str, result: Result<(), ClientError>) -> Result<(), Violation> {
        match result {
            Ok(()) => Ok(()),
            Err(ClientError::Transport(_)) => {
                self.report.lost_requests += 1;
                Ok(())
            }
            Err(ClientError::Server { code: ErrorCode::RateLimited | ErrorCode::ServerBusy }) => {
                self.report.refused_for_now += 1;
                Ok(())
            }
            Err(ClientError::NotInGroup(_)) => Ok(()),
            Err(error) => Err(self.violation(format!("device {i} {doing}: {error}"))),
        }
    }

    async fn step_once(&mut self) -> Result<(), Violation> {
        let roll = self.rng.borrow_mut().below(100);
        let i = self.pick_device();
        self.env.advance(self.rng.borrow_mut().below(STEP_MS_MAX) as u64);
        if self.config.trace {
            let device = &self.devices[i];
            let online = if device.link.connected() { "online" } else { "offline" };
            eprintln!("step {} roll {roll} device {i} (user {}, {:?}, {online})", self.step, device.user, device.state);
        }
        match self.devices[i].state {
            DeviceState::Active => {}
            DeviceState::Pending { .. } => return self.approve_pending(i).await,
            DeviceState::Revoked => return self.haunt(i).await,
            DeviceState::Abandoned => return Ok(()),
        }
        if !self.devices[i].link.connected() {
            // An offline device's only move is to come back.
            return if roll < RECONNECT_PERCENT { self.reconnect(i).await } else { Ok(()) };
        }
        match roll {
            0..=40 => self.send(i).await,
            41..=77 => self.sync(i).await,
            78..=83 => {
                self.devices[i].link.disconnect().await;
                Ok(())
            }
            84..=88 => self.crash_device(i).await,
            89..=90 => {
                self.crash_server();
                Ok(())
            }
            91..=94 => self.change_membership().await,
            95..=97 => self.link_device(i).await,
            _ => self.revoke_sibling(i).await,
        }
    }

    /// The device that acts: a live one (approved or waiting), now and then a revoked one.
    fn pick_device(&mut self) -> usize {
        let mut rng = self.rng.borrow_mut();
        let haunt = rng.chance(HAUNT_PERCENT);
        let (revoked, live): (Vec<usize>, Vec<usize>) =
            (0..self.devices.len()).partition(|d| self.devices[*d].state == DeviceState::Revoked);
        let from = if haunt && !revoked.is_empty() { revoked } else { live };
        from[rng.below(from.len())]
    }

    /// The server process dies: every session is gone, storage (all acknowledged writes) stays.
    fn crash_server(&mut self) {
        self.report.server_crashes += 1;
        for device in &mut self.devices {
            device.link.sever();
        }
        self.core = Arc::new(ServerCore::new(
            self.store.clone(),
            self.env.clone(),
            Arc::new(Metrics::default()),
            core_config(),
        ));
    }

    /// No more faults: every active device reconnects and catches up, round after round, while
    /// time passes (rate limits refill), until a round orders nothing new.
    async fn quiesce(&mut self) -> Result<(), Violation> {
        for device in &mut self.devices {
            device.link.fault_percent = 0;
        }
        for round in 0..QUIESCE_ROUNDS_MAX {
            let before = self.last_seqs().await?;
            self.env.advance(QUIESCE_ROUND_MS);
            for i in 0..self.devices.len() {
                if !self.devices[i].is_active() {
                    continue;
                }
                if !self.devices[i].link.connected() {
                    self.reconnect(i).await?;
                } else {
                    self.catch_up(i).await?;
                }
            }
            if round > 0 && self.last_seqs().await? == before {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Mirrors what the server ordered since the last step.
    async fn refresh(&mut self) -> Result<(), Violation> {
        let result = self.logs.refresh(&self.store, &self.tap).await;
        result.map_err(|e| self.violation(e))
    }

    /// The server's last seq of every conversation now (the boundary of a change just made).
    async fn last_seqs(&self) -> Result<BTreeMap<ConvId, Seq>, Violation> {
        let mut seqs = BTreeMap::new();
        for conv in &self.convs {
            let record = self.store.conversation(*conv).await.map_err(|e| self.violation(e.to_string()))?;
            seqs.insert(*conv, record.map_or(0, |r| r.last_seq));
        }
        Ok(seqs)
    }

    /// Members of `conv` as the server has them now.
    async fn members(&self, conv: ConvId) -> Result<BTreeSet<UserId>, Violation> {
        let members = self.store.members(conv).await.map_err(|e| self.violation(e.to_string()))?;
        Ok(members.into_iter().map(|m| m.user).collect())
    }

    fn user_index(&self, user: UserId) -> Option<usize> {
        self.users.iter().position(|u| u.id == user)
    }
}
