//! End-to-end encryption for one device: MLS (RFC 9420) through openmls.
//!
//! Why openmls: a maintained, audited-in-parts implementation of RFC 9420 in Rust with a
//! pluggable storage provider and a pure-Rust crypto backend (`openmls_rust_crypto`) that also
//! compiles to wasm32, so the terminal and the web client share this exact code.
//!
//! Every conversation is one MLS group whose group id is the conversation id; every device is a
//! member with a basic credential naming (user id, device id). openmls keeps its state in an
//! in-memory storage provider (its `StorageProvider` is synchronous); [`DeviceCrypto::export`]
//! serialises that working set so the caller can persist it after each change, and
//! [`DeviceCrypto::import`] restores it.

use std::collections::BTreeMap;

use anytime_proto::limits::MLS_PAST_EPOCHS_MAX;
use anytime_proto::{ConvId, DeviceId, UserId};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde::{Deserialize, Serialize};

/// X25519 + AES-128-GCM + SHA-256 + Ed25519: the mandatory-to-implement suite of RFC 9420.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Who a device is, as carried in its MLS credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub user: UserId,
    pub device: DeviceId,
}

impl DeviceIdentity {
    fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.user.0.to_be_bytes());
        bytes.extend_from_slice(&self.device.0.to_be_bytes());
        bytes
    }

    fn from_credential(credential: &Credential) -> Option<DeviceIdentity> {
        let basic = BasicCredential::try_from(credential.clone()).ok()?;
        let bytes: [u8; 16] = basic.identity().try_into().ok()?;
        let user = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let device = u64::from_be_bytes(bytes[8..].try_into().ok()?);
        Some(DeviceIdentity { user: UserId(user), device: DeviceId(device) })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum E2eeError {
    #[error("no MLS group for conversation {0}")]
    UnknownGroup(ConvId),
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    #[error("MLS operation failed: {0}")]
    Mls(String),
    #[error("stored encryption state is unreadable: {0}")]
    State(String),
    /// A message of the group's current epoch that this device should be able to open failed:
    /// the sender's state and ours disagree (its ratchet forked, e.g. two processes advanced one
    /// saved state). Only re-adding that device with fresh keys repairs it.
    #[error("the sender's encryption state has diverged from this device's: {0}")]
    Diverged(String),
}

fn mls<E: std::fmt::Display>(error: E) -> E2eeError {
    E2eeError::Mls(error.to_string())
}

/// What an incoming MLS message turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Decrypted application data from an authenticated member device.
    Application { sender: DeviceIdentity, plaintext: Vec<u8> },
    /// A commit by another member was applied; the group is at a new epoch.
    CommitApplied { sender: Option<DeviceIdentity>, removed_self: bool },
    /// This device's own message coming back from the server.
    Own,
    /// Older than this device's view of the group (e.g. the commit that added it): nothing to do.
    Stale,
}

/// A commit this device made, waiting for the server to order it.
#[derive(Debug, Clone)]
pub struct OutgoingCommit {
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
}

/// The serialised working set (see module docs).
#[derive(Serialize, Deserialize)]
struct ExportedState {
    identity: DeviceIdentity,
    signature_public_key: Vec<u8>,
    groups: Vec<ConvId>,
    storage: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct DeviceCrypto {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    identity: DeviceIdentity,
    groups: BTreeMap<ConvId, MlsGroup>,
}

fn group_id(conv: ConvId) -> GroupId {
    GroupId::from_slice(&conv.0.to_be_bytes())
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        // Application messages of the previous epochs stay decryptable for a while: a member may
        // send just before a commit lands.
        .max_past_epochs(MLS_PAST_EPOCHS_MAX)
        .build()
}

impl DeviceCrypto {
    /// A fresh device identity with a new signature key.
    pub fn new(identity: DeviceIdentity) -> Result<DeviceCrypto, E2eeError> {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?;
        signer.store(provider.storage()).map_err(mls)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.to_bytes()).into(),
            signature_key: signer.public().into(),
        };
        Ok(DeviceCrypto { provider, signer, credential, identity, groups: BTreeMap::new() })
    }

    pub fn identity(&self) -> DeviceIdentity {
        self.identity
    }

    /// The device's public signature key: what safety numbers are computed from.
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// Serialises the whole MLS working set (keys and groups).
    pub fn export(&self) -> Vec<u8> {
        let storage = self.provider.storage().values.read().map(|values| {
            let mut entries: Vec<_> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            entries.sort();
            entries
        });
        let state = ExportedState {
            identity: self.identity,
            signature_public_key: self.signer.public().to_vec(),
            groups: self.groups.keys().copied().collect(),
            // A poisoned lock means a panic mid-write elsewhere; export what we can see.
            storage: storage.unwrap_or_default(),
        };
        // Plain data into a Vec cannot fail.
        postcard::to_allocvec(&state).expect("state serialises")
    }

    pub fn import(bytes: &[u8]) -> Result<DeviceCrypto, E2eeError> {
        let state: ExportedState = postcard::from_bytes(bytes).map_err(|e| E2eeError::State(e.to_string()))?;
        let provider = OpenMlsRustCrypto::default();
        {
            let mut values = provider.storage().values.write().map_err(|_| E2eeError::State("lock poisoned".into()))?;
            values.extend(state.storage);
        }
        let signer =
            SignatureKeyPair::read(provider.storage(), &state.signature_public_key, CIPHERSUITE.signature_algorithm())
                .ok_or_else(|| E2eeError::State("signature key missing".into()))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(state.identity.to_bytes()).into(),
            signature_key: signer.public().into(),
        };
        let mut groups = BTreeMap::new();
        for conv in state.groups {
            let group = MlsGroup::load(provider.storage(), &group_id(conv))
                .map_err(|e| E2eeError::State(e.to_string()))?
                .ok_or_else(|| E2eeError::State(format!("group {conv} missing")))?;
            groups.insert(conv, group);
        }
        Ok(DeviceCrypto { provider, signer, credential, identity: state.identity, groups })
    }

    /// New one-time key packages, serialised for upload.
    pub fn key_packages(&mut self, count: usize) -> Result<Vec<Vec<u8>>, E2eeError> {
        (0..count).map(|_| self.key_package(false)).collect()
    }

    /// A last-resort key package (reusable; handed out when the one-time ones ran out).
    pub fn last_resort_key_package(&mut self) -> Result<Vec<u8>, E2eeError> {
        self.key_package(true)
    }

    fn key_package(&mut self, last_resort: bool) -> Result<Vec<u8>, E2eeError> {
        let builder = KeyPackage::builder();
        let builder = if last_resort { builder.mark_as_last_resort() } else { builder };
        let bundle = builder.build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone()).map_err(mls)?;
        bundle.key_package().tls_serialize_detached().map_err(mls)
    }

    /// Conversations whose group this device is in.
    pub fn groups(&self) -> Vec<ConvId> {
        self.groups.iter().filter(|(_, g)| g.is_active()).map(|(c, _)| *c).collect()
    }

    pub fn has_group(&self, conv: ConvId) -> bool {
        self.groups.get(&conv).is_some_and(|g| g.is_active())
    }

    pub fn epoch(&self, conv: ConvId) -> Option<u64> {
        self.groups.get(&conv).map(|g| g.epoch().as_u64())
    }

    /// Starts the MLS group of a conversation with this device as its only member (epoch 0).
    pub fn create_group(&mut self, conv: ConvId) -> Result<(), E2eeError> {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MLS_PAST_EPOCHS_MAX)
            .build();
        let group =
            MlsGroup::new_with_group_id(&self.provider, &self.signer, &config, group_id(conv), self.credential.clone())
                .map_err(mls)?;
        self.groups.insert(conv, group);
        Ok(())
    }

    /// Forgets a group (this device left, was removed, or lost a creation race).
    pub fn drop_group(&mut self, conv: ConvId) {
        if let Some(mut group) = self.groups.remove(&conv) {
            let _ = group.delete(self.provider.storage());
        }
    }

    /// Devices currently in the group.
    pub fn members(&self, conv: ConvId) -> Vec<DeviceIdentity> {
        match self.groups.get(&conv) {
            Some(group) => group.members().filter_map(|m| DeviceIdentity::from_credential(&m.credential)).collect(),
            None => Vec::new(),
        }
    }

    /// Devices in the group with their signature keys (for safety numbers).
    pub fn member_keys(&self, conv: ConvId) -> Vec<(DeviceIdentity, Vec<u8>)> {
        match self.groups.get(&conv) {
            Some(group) => group
                .members()
                .filter_map(|m| DeviceIdentity::from_credential(&m.credential).map(|id| (id, m.signature_key)))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The HPKE encryption key of a member device's leaf: changes whenever that device is
    /// re-added (fresh key package) or updates its path, so it tells "already repaired" apart.
    pub fn leaf_key(&self, conv: ConvId, device: DeviceIdentity) -> Option<Vec<u8>> {
        let group = self.groups.get(&conv)?;
        group
            .members()
            .find(|m| DeviceIdentity::from_credential(&m.credential) == Some(device))
            .map(|m| m.encryption_key)
    }

    /// Proposes and commits adding the devices whose key packages are given. The commit stays
    /// pending until [`Self::merge_pending`] (server accepted) or [`Self::discard_pending`].
    pub fn add_devices(&mut self, conv: ConvId, key_packages: &[Vec<u8>]) -> Result<OutgoingCommit, E2eeError> {
        let mut packages = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let incoming = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
                .map_err(|e| E2eeError::Malformed(e.to_string()))?;
            let package = incoming
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| E2eeError::Malformed(e.to_string()))?;
            packages.push(package);
        }
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        let (commit, welcome, _) = group.add_members(&self.provider, &self.signer, &packages).map_err(mls)?;
        Ok(OutgoingCommit {
            commit: commit.tls_serialize_detached().map_err(mls)?,
            welcome: Some(welcome.tls_serialize_detached().map_err(mls)?),
        })
    }

    /// Commits removing these devices from the group (pending like `add_devices`).
    pub fn remove_devices(&mut self, conv: ConvId, devices: &[DeviceIdentity]) -> Result<OutgoingCommit, E2eeError> {
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        let leaves: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| DeviceIdentity::from_credential(&m.credential).is_some_and(|id| devices.contains(&id)))
            .map(|m| m.index)
            .collect();
        let (commit, _, _) = group.remove_members(&self.provider, &self.signer, &leaves).map_err(mls)?;
        Ok(OutgoingCommit { commit: commit.tls_serialize_detached().map_err(mls)?, welcome: None })
    }

    /// The server accepted this device's commit: move to the new epoch.
    pub fn merge_pending(&mut self, conv: ConvId) -> Result<(), E2eeError> {
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        group.merge_pending_commit(&self.provider).map_err(mls)
    }

    /// This device built a commit the server has not yet confirmed (its answer may be lost).
    pub fn has_pending_commit(&self, conv: ConvId) -> bool {
        self.groups.get(&conv).is_some_and(|group| group.pending_commit().is_some())
    }

    /// The server refused this device's commit (another won the epoch): forget it.
    pub fn discard_pending(&mut self, conv: ConvId) -> Result<(), E2eeError> {
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        group.clear_pending_commit(self.provider.storage()).map_err(mls)
    }

    pub fn encrypt(&mut self, conv: ConvId, plaintext: &[u8]) -> Result<Vec<u8>, E2eeError> {
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        let message = group.create_message(&self.provider, &self.signer, plaintext).map_err(mls)?;
        message.tls_serialize_detached().map_err(mls)
    }

    /// Processes a message the server ordered into `conv`: decrypts application data or
    /// applies another member's commit. Never panics on hostile bytes.
    pub fn process(&mut self, conv: ConvId, bytes: &[u8]) -> Result<Incoming, E2eeError> {
        let group = self.groups.get_mut(&conv).ok_or(E2eeError::UnknownGroup(conv))?;
        let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| E2eeError::Malformed(e.to_string()))?;
        let protocol = message.try_into_protocol_message().map_err(|e| E2eeError::Malformed(e.to_string()))?;
        if protocol.epoch() < group.epoch() && protocol.content_type() == ContentType::Commit {
            return Ok(Incoming::Stale);
        }
        let current = protocol.epoch() == group.epoch();
        let processed = group.process_message(&self.provider, protocol).map_err(|error| {
            // A current-epoch message every member can open, except that we cannot: our view and
            // the sender's have split. Older epochs fail for ordinary reasons (pruned secrets).
            if current {
                E2eeError::Diverged(error.to_string())
            } else {
                mls(error)
            }
        })?;
        let sender = DeviceIdentity::from_credential(processed.credential());
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(application) => {
                let sender = sender.ok_or_else(|| E2eeError::Malformed("sender has no device identity".into()))?;
                Ok(Incoming::Application { sender, plaintext: application.into_bytes() })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed_self = staged.self_removed();
                group.merge_staged_commit(&self.provider, *staged).map_err(mls)?;
                Ok(Incoming::CommitApplied { sender, removed_self })
            }
            ProcessedMessageContent::OwnPrivateMessage => Ok(Incoming::Own),
            // Standalone proposals are not used by Anytime clients; a member sending one gets
            // no effect (it would need a commit to apply).
            _ => Ok(Incoming::Stale),
        }
    }

    /// Joins a group from a Welcome addressed to this device.
    pub fn join(&mut self, conv: ConvId, welcome: &[u8]) -> Result<(), E2eeError> {
        let message = MlsMessageIn::tls_deserialize_exact(welcome).map_err(|e| E2eeError::Malformed(e.to_string()))?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(E2eeError::Malformed("not a Welcome".into()));
        };
        let builder = StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome).map_err(mls)?;
        if builder.processed_welcome().unverified_group_info().group_id() != &group_id(conv) {
            return Err(E2eeError::Malformed("Welcome is for another conversation".into()));
        }
        // A Welcome that opens (its key package was ours and unused) supersedes a group we still
        // hold: we were re-added because our copy had diverged.
        let staged = builder.replace_old_group().build().map_err(mls)?;
        self.drop_group(conv);
        let group = staged.into_group(&self.provider).map_err(mls)?;
        self.groups.insert(conv, group);
        Ok(())
    }
}
