//! Anytime server logic: accounts, devices, conversations and the MLS delivery service.
//!
//! The shell (`anytime-server`) authenticates HTTP calls and WebSocket connections, decodes
//! nothing itself and hands bytes to a [`Session`] per connection. Everything durable goes
//! through the [`ServerStore`] trait and the current time and randomness through [`Env`], so
//! this crate never depends on axum, a database driver or the system clock.
//!
//! Architecture invariant: the server never interprets message payloads. They are MLS
//! ciphertext, stored and forwarded as opaque bytes and never logged.

pub mod auth;
mod blobs;
pub mod cluster;
mod core;
pub mod env;
pub mod hub;
pub mod login_throttle;
pub mod metrics;
pub mod outbound;
pub mod password_gate;
pub mod ratelimit;
mod requests;
pub mod session;
pub mod store;
mod wallet;
pub mod web_push;

pub use core::{Config, ServerCore, ARGON2_COST_DEFAULT};
pub use env::Env;
pub use hub::Hub;
pub use metrics::Metrics;
pub use ratelimit::{Rate, RateLimits};
pub use session::{Completed, Flow, PendingRequest, Session};
pub use store::{ServerStore, StoreError};
