//! Deterministic simulation of Anytime (in the spirit of TigerBeetle's VOPR and FoundationDB's
//! simulator): the real server core (`Session`s over the in-memory store) and real client cores
//! (MLS included) in one thread, driven step by step by one seeded RNG. Steps: sends, syncs,
//! lost requests and lost answers, disconnects and reconnects, device crashes (restart from the
//! persisted state) and server crashes (all sessions gone, storage kept). After every step the
//! invariants are checked; at the end every device catches up and every message must have
//! arrived exactly once everywhere it should.
//!
//! A run is a pure function of its `Config`: a failing seed replays the same run. (The MLS
//! ciphertexts differ between runs — openmls draws its own randomness — but nothing the run
//! decides depends on their bytes.)

mod env;
mod link;
mod rng;
mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use anytime_client::content::Text;
use anytime_client::e2ee::{DeviceCrypto, DeviceIdentity};
use anytime_client::{Client, ClientError, Content, Event};
use anytime_proto::http::RegisterRequest;
use anytime_proto::{frame, ConvId, MsgId, ServerFrame, UserId};
use anytime_server_core::{Config as CoreConfig, Metrics, ServerCore};
use anytime_store_memory::MemoryStore;

use crate::env::SimEnv;
use crate::link::Link;
use crate::rng::Rng;
pub use crate::store::{Fault, SimStore};

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
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config { seed, users: 4, steps: 300, network_faults: 3, fault: None }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub sends: usize,
    pub deliveries: usize,
    pub lost_requests: usize,
    pub reconnects: usize,
    pub device_crashes: usize,
    pub server_crashes: usize,
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

struct Device {
    user: UserId,
    token: String,
    client: Option<Client<SimStore>>,
    link: Link,
}

/// A message a user sent: delivered exactly once to every other member device.
struct Sent {
    conv: ConvId,
    msg_id: MsgId,
    sender: UserId,
    body: String,
}

struct World {
    config: Config,
    env: Arc<SimEnv>,
    store: Arc<MemoryStore>,
    core: Arc<ServerCore>,
    rng: Rc<RefCell<Rng>>,
    devices: Vec<Device>,
    /// Conversation → member users.
    convs: BTreeMap<ConvId, Vec<UserId>>,
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
            world.check_step()?;
        }
        world.step += 1;
        world.quiesce().await?;
        world.check_end()?;
        Ok(world.report)
    })
}

impl World {
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
            devices: Vec::new(),
            convs: BTreeMap::new(),
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
                .register(std::net::Ipv4Addr::LOCALHOST.into(), request)
                .await
                .map_err(|code| world.violation(format!("register: {code}")))?;
            let identity = DeviceIdentity { user: session.user_id, device: session.device_id };
            let crypto = DeviceCrypto::new(identity).map_err(|e| world.violation(format!("keys: {e}")))?;
            let client = Client::new(crypto, SimStore::new(world.config.fault));
            world.devices.push(Device {
                user: session.user_id,
                token: session.token,
                client: Some(client),
                link: Link::new(world.rng.clone()),
            });
        }
        Ok(world)
    }

    /// Everyone online, one group of all users and a direct chat between neighbours; no faults.
    async fn setup(&mut self) -> Result<(), Violation> {
        for i in 0..self.devices.len() {
            self.reconnect(i).await?;
        }
        let everyone: Vec<UserId> = self.devices.iter().map(|d| d.user).collect();
        let group = frame::CreateGroup { name: "sim".into(), members: everyone[1..].to_vec() };
        self.create(0, group.into(), everyone.clone()).await?;
        for i in 0..self.devices.len().saturating_sub(1) {
            let peer = self.devices[i + 1].user;
            self.create(i, frame::CreateDirect { peer }.into(), vec![self.devices[i].user, peer]).await?;
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
        members: Vec<UserId>,
    ) -> Result<(), Violation> {
        let device = &mut self.devices[i];
        let client = device.client.as_mut().ok_or_else(|| Violation { seed: 0, step: 0, what: "no client".into() })?;
        let info = match anytime_client::Transport::request(&mut device.link, request).await {
            Ok(ServerFrame::ConversationInfo(info)) => info,
            other => return Err(self.violation(format!("creating a conversation: {other:?}"))),
        };
        client.establish(&mut device.link, &info).await.map_err(|e| self.violation(format!("establish: {e}")))?;
        self.convs.insert(info.conv, members);
        Ok(())
    }

    async fn reconnect(&mut self, i: usize) -> Result<(), Violation> {
        let core = self.core.clone();
        let device = &mut self.devices[i];
        let faults = std::mem::take(&mut device.link.fault_percent);
        let connected = device.link.connect(&core, &device.token).await;
        device.link.fault_percent = faults;
        match connected {
            Ok(()) => {
                self.report.reconnects += 1;
                self.catch_up(i).await
            }
            Err(error) => Err(self.violation(format!("device {i} cannot reconnect: {error}"))),
        }
    }

    async fn catch_up(&mut self, i: usize) -> Result<(), Violation> {
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let result = client.catch_up(&mut device.link, 0).await.map(|_| ());
        self.settle(i, "catching up", result)
    }

    /// A lost connection is part of the run (counted); any other error breaks an invariant.
    fn settle(&mut self, i: usize, doing: &str, result: Result<(), ClientError>) -> Result<(), Violation> {
        match result {
            Ok(()) => Ok(()),
            Err(ClientError::Transport(_)) => {
                self.report.lost_requests += 1;
                Ok(())
            }
            Err(error) => Err(self.violation(format!("device {i} {doing}: {error}"))),
        }
    }

    async fn step_once(&mut self) -> Result<(), Violation> {
        let roll = self.rng.borrow_mut().below(100);
        let i = self.rng.borrow_mut().below(self.devices.len());
        self.env.advance(self.rng.borrow_mut().below(200) as u64);
        if !self.devices[i].link.connected() {
            // An offline device's only move is to come back.
            return if roll < 30 { self.reconnect(i).await } else { Ok(()) };
        }
        match roll {
            0..=44 => self.send(i).await,
            45..=84 => self.sync(i).await,
            85..=91 => {
                self.devices[i].link.disconnect().await;
                Ok(())
            }
            92..=97 => self.crash_device(i).await,
            _ => {
                self.crash_server();
                Ok(())
            }
        }
    }

    async fn send(&mut self, i: usize) -> Result<(), Violation> {
        let user = self.devices[i].user;
        let convs: Vec<ConvId> = self.convs.iter().filter(|(_, m)| m.contains(&user)).map(|(c, _)| *c).collect();
        let conv = convs[self.rng.borrow_mut().below(convs.len())];
        let mut id = [0u8; 16];
        self.rng.borrow_mut().fill(&mut id);
        let msg_id = MsgId(id);
        let body = format!("m{}-{}", self.config.seed, self.sent.len());
        self.sent.push(Sent { conv, msg_id, sender: user, body: body.clone() });
        self.report.sends += 1;
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let content = Content::Text(Text { body, mentions: Vec::new() });
        // A lost send stays in the outbox and goes again on the next sync.
        let result = client.send(&mut device.link, conv, content, msg_id).await.map(|_| ());
        self.settle(i, "sending", result)
    }

    async fn sync(&mut self, i: usize) -> Result<(), Violation> {
        let device = &mut self.devices[i];
        let Some(client) = device.client.as_mut() else { return Ok(()) };
        let result = client.sync(&mut device.link, 0).await.map(|_| ());
        self.settle(i, "syncing", result)
    }

    /// The device's process dies: it restarts from what its store persisted, nothing else.
    async fn crash_device(&mut self, i: usize) -> Result<(), Violation> {
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

    /// No more faults: everyone reconnects and catches up until nothing new arrives.
    async fn quiesce(&mut self) -> Result<(), Violation> {
        for device in &mut self.devices {
            device.link.fault_percent = 0;
        }
        for _round in 0..6 {
            for i in 0..self.devices.len() {
                if !self.devices[i].link.connected() {
                    self.reconnect(i).await?;
                } else {
                    self.catch_up(i).await?;
                }
            }
        }
        Ok(())
    }

    /// Per device: each conversation's messages in server order, each message at most once,
    /// and nothing undecryptable (one writer per device state, so nothing may fork).
    fn check_step(&self) -> Result<(), Violation> {
        for (i, device) in self.devices.iter().enumerate() {
            let Some(client) = device.client.as_ref() else { continue };
            let mut last_seq: BTreeMap<ConvId, u64> = BTreeMap::new();
            let mut seen: BTreeSet<MsgId> = BTreeSet::new();
            for (conv, seq, event) in client.store().records() {
                if *seq > 0 {
                    let last = last_seq.entry(*conv).or_insert(0);
                    if *seq <= *last {
                        return Err(self.violation(format!("device {i} processed seq {seq} of {conv} after {last}")));
                    }
                    *last = *seq;
                }
                match event {
                    Some(Event::Message { msg_id, own: false, .. }) if !seen.insert(*msg_id) => {
                        return Err(self.violation(format!("device {i} got message {msg_id} twice")));
                    }
                    Some(Event::Undecryptable { conv, seq, reason, .. }) => {
                        return Err(self.violation(format!("device {i} cannot decrypt seq {seq} of {conv}: {reason}")));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// After catching up: every message sent arrived exactly once at every other member, and
    /// no outbox still holds anything.
    fn check_end(&mut self) -> Result<(), Violation> {
        self.check_step()?;
        for (i, device) in self.devices.iter().enumerate() {
            let Some(client) = device.client.as_ref() else { continue };
            if !client.store().outbox_is_empty() {
                return Err(self.violation(format!("device {i} still has unsent messages after catching up")));
            }
            let received: BTreeMap<MsgId, (ConvId, String)> = client
                .store()
                .records()
                .iter()
                .filter_map(|(_, _, event)| match event {
                    Some(Event::Message { conv, msg_id, own: false, content: Content::Text(text), .. }) => {
                        Some((*msg_id, (*conv, text.body.clone())))
                    }
                    _ => None,
                })
                .collect();
            for sent in &self.sent {
                let member = self.convs.get(&sent.conv).is_some_and(|m| m.contains(&device.user));
                if !member || sent.sender == device.user {
                    continue;
                }
                match received.get(&sent.msg_id) {
                    Some((conv, body)) if *conv == sent.conv && *body == sent.body => {}
                    Some(other) => {
                        return Err(self.violation(format!("device {i} got {} as {other:?}", sent.msg_id)));
                    }
                    None => {
                        return Err(self.violation(format!(
                            "message {} ({:?}) from {} never reached device {i}",
                            sent.msg_id, sent.body, sent.sender
                        )));
                    }
                }
            }
            self.report.deliveries += received.len();
        }
        Ok(())
    }
}
