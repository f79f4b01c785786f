//! Native network shell of the Anytime client: a WebSocket connection that sends frames and
//! matches answers to requests by id, keeping pushes in arrival order. Used by the CLI, by the
//! real-process tests and by the load tool.

mod connection;

pub use connection::{msg_id, HelloRefused, RawClient};
