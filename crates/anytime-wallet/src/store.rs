//! The wallet's own records beside the ledger: payment PINs. (Balances and transfers are the
//! ledger's.)

use std::collections::HashMap;
use std::sync::Mutex;

use anytime_proto::UserId;
use async_trait::async_trait;

use crate::envelope::{Claim, Envelope, Grab, Status};
use crate::pin::PinRecord;
use crate::request::{self, MoneyRequest};

#[derive(Debug, thiserror::Error)]
#[error("wallet store: {0}")]
pub struct WalletStoreError(pub String);

#[async_trait]
pub trait WalletStore: Send + Sync {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError>;
    /// Writes (durably) the record of `user`.
    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError>;

    /// Stores a new envelope; the same envelope again is a no-op (a retried creation). `false`
    /// when another envelope has this id.
    async fn create_envelope(&self, envelope: &Envelope) -> Result<bool, WalletStoreError>;
    async fn envelope(&self, id: u128) -> Result<Option<Envelope>, WalletStoreError>;
    /// Takes the next share for `user` (or finds the one `user` took before), atomically: of many
    /// concurrent grabs, exactly as many as there are shares get one.
    async fn grab(&self, id: u128, user: UserId, now_ms: u64) -> Result<Grab, WalletStoreError>;
    /// The grabs so far, in share order.
    async fn claims(&self, id: u128) -> Result<Vec<Claim>, WalletStoreError>;
    async fn set_envelope_status(&self, id: u128, status: Status) -> Result<(), WalletStoreError>;
    /// Open envelopes past their expiry.
    async fn envelopes_due(&self, now_ms: u64, limit: u32) -> Result<Vec<u128>, WalletStoreError>;

    /// Stores new requests (a split's all at once, atomically); the same ones again are a no-op.
    /// `false` when another request has one of the ids.
    async fn create_requests(&self, requests: &[MoneyRequest]) -> Result<bool, WalletStoreError>;
    async fn request(&self, id: u128) -> Result<Option<MoneyRequest>, WalletStoreError>;
    /// Sets the status; with `only_if_open`, only an open request changes. Returns whether it did.
    async fn set_request_status(
        &self,
        id: u128,
        status: request::Status,
        only_if_open: bool,
    ) -> Result<bool, WalletStoreError>;
    /// The requests of a split bill, in creation order.
    async fn split_requests(&self, split: u128) -> Result<Vec<MoneyRequest>, WalletStoreError>;
    /// What `payer` is asked to pay: open requests not expired at `now_ms`, newest first, at most
    /// `limit`.
    async fn open_requests_for(
        &self,
        payer: UserId,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<MoneyRequest>, WalletStoreError>;
}

#[derive(Debug, Default)]
pub struct MemoryWalletStore {
    pins: Mutex<HashMap<UserId, PinRecord>>,
    envelopes: Mutex<HashMap<u128, (Envelope, Vec<Claim>)>>,
    requests: Mutex<Vec<MoneyRequest>>,
}

#[async_trait]
impl WalletStore for MemoryWalletStore {
    async fn pin(&self, user: UserId) -> Result<Option<PinRecord>, WalletStoreError> {
        Ok(self.pins.lock().unwrap_or_else(|e| e.into_inner()).get(&user).cloned())
    }

    async fn put_pin(&self, user: UserId, record: &PinRecord) -> Result<(), WalletStoreError> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner()).insert(user, record.clone());
        Ok(())
    }

    async fn create_envelope(&self, envelope: &Envelope) -> Result<bool, WalletStoreError> {
        let mut envelopes = self.envelopes.lock().unwrap_or_else(|e| e.into_inner());
        match envelopes.get(&envelope.id) {
            Some((existing, _)) => Ok(same_envelope(existing, envelope)),
            None => {
                envelopes.insert(envelope.id, (envelope.clone(), Vec::new()));
                Ok(true)
            }
        }
    }

    async fn envelope(&self, id: u128) -> Result<Option<Envelope>, WalletStoreError> {
        Ok(self.envelopes.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|(e, _)| e.clone()))
    }

    async fn grab(&self, id: u128, user: UserId, now_ms: u64) -> Result<Grab, WalletStoreError> {
        let mut envelopes = self.envelopes.lock().unwrap_or_else(|e| e.into_inner());
        let Some((envelope, claims)) = envelopes.get_mut(&id) else { return Ok(Grab::Empty) };
        if let Some(claim) = claims.iter().find(|c| c.user == user) {
            return Ok(Grab::Share { claim: claim.clone(), fresh: false });
        }
        let index = claims.len();
        let Some(amount) = envelope.shares.get(index) else { return Ok(Grab::Empty) };
        let claim = Claim { user, index: index as u32, amount: *amount, at_ms: now_ms };
        claims.push(claim.clone());
        Ok(Grab::Share { claim, fresh: true })
    }

    async fn claims(&self, id: u128) -> Result<Vec<Claim>, WalletStoreError> {
        Ok(self
            .envelopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|(_, c)| c.clone())
            .unwrap_or_default())
    }

    async fn set_envelope_status(&self, id: u128, status: Status) -> Result<(), WalletStoreError> {
        if let Some((envelope, _)) = self.envelopes.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
            envelope.status = status;
        }
        Ok(())
    }

    async fn envelopes_due(&self, now_ms: u64, limit: u32) -> Result<Vec<u128>, WalletStoreError> {
        let envelopes = self.envelopes.lock().unwrap_or_else(|e| e.into_inner());
        let mut due: Vec<(u64, u128)> = envelopes
            .values()
            .filter(|(e, _)| e.status == Status::Open && e.expires_at_ms <= now_ms)
            .map(|(e, _)| (e.expires_at_ms, e.id))
            .collect();
        due.sort();
        Ok(due.into_iter().take(limit as usize).map(|(_, id)| id).collect())
    }

    async fn create_requests(&self, new: &[MoneyRequest]) -> Result<bool, WalletStoreError> {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for r in new {
            if let Some(existing) = requests.iter().find(|e| e.id == r.id) {
                if !request::same_request(existing, r) {
                    return Ok(false);
                }
            }
        }
        for r in new {
            if !requests.iter().any(|e| e.id == r.id) {
                requests.push(r.clone());
            }
        }
        Ok(true)
    }

    async fn request(&self, id: u128) -> Result<Option<MoneyRequest>, WalletStoreError> {
        Ok(self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|r| r.id == id).cloned())
    }

    async fn set_request_status(
        &self,
        id: u128,
        status: request::Status,
        only_if_open: bool,
    ) -> Result<bool, WalletStoreError> {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        match requests.iter_mut().find(|r| r.id == id) {
            Some(r) if !only_if_open || r.status == request::Status::Open => {
                r.status = status;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn split_requests(&self, split: u128) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        Ok(requests.iter().filter(|r| r.split == Some(split)).cloned().collect())
    }

    async fn open_requests_for(
        &self,
        payer: UserId,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<MoneyRequest>, WalletStoreError> {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let open = requests
            .iter()
            .rev()
            .filter(|r| r.payer == payer && r.status == request::Status::Open && r.expires_at_ms > now_ms);
        Ok(open.take(limit as usize).cloned().collect())
    }
}

/// A retried creation asks for the same envelope (its random shares were drawn again, so they
/// are not compared: the first ones stand).
pub fn same_envelope(a: &Envelope, b: &Envelope) -> bool {
    a.owner == b.owner
        && a.conv == b.conv
        && a.currency == b.currency
        && a.total == b.total
        && a.shares.len() == b.shares.len()
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_wallet_store_conformance_cases() {
        crate::conformance::run_all(|| async { super::MemoryWalletStore::default() }).await;
    }
}
