//! Anytime client core: the one implementation of end-to-end encryption and of the message
//! content schema that every client (terminal, web via wasm32) uses.
//!
//! Architecture invariant: this crate does no I/O and reads no clock: it builds for
//! `wasm32-unknown-unknown`. Randomness comes from the MLS crypto provider (the OS RNG natively,
//! `crypto.getRandomValues` in the browser through openmls' `js` feature).

pub mod client;
pub mod content;
pub mod e2ee;
pub mod memory_store;
pub mod preview;
pub mod safety;
#[cfg(any(test, feature = "conformance"))]
pub mod store_conformance;
pub mod timeline;

pub use client::{
    Changes, Client, ClientError, ClientStore, Event, OutboxEntry, Queued, Record, StoreError, Transport,
};
pub use content::Content;
pub use e2ee::{DeviceCrypto, DeviceIdentity, E2eeError, Incoming};
pub use memory_store::MemoryStore;
