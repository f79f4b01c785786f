//! Real-process tests: each starts the built `anytime` binary on 127.0.0.1 with its own data
//! directory and talks to it over HTTP and raw protocol frames (anytime-testkit).

mod support;

mod bad_input;
mod blobs;
mod cli;
mod cluster;
mod concurrency;
mod durability;
mod hardening;
mod load;
mod messaging;
mod one_writer;
mod privacy;
mod push;
mod wallet;
