//! Server counters and histograms, exposed at `/metrics` in the Prometheus text format.
//!
//! Written by hand rather than with the `prometheus` crate: the handful of atomics below is all
//! the server needs, the exposition format is a few lines of text, and the hot path stays a
//! single relaxed atomic add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Fixed-bucket histogram (cumulative counts rendered at scrape time).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Relaxed) as f64 / 1e6
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {}", self.sum());
        let _ = writeln!(out, "{name}_count {total}");
    }
}

pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub frame_errors: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub commits_in: AtomicU64,
    pub lagged_connections: AtomicU64,
    pub gc_deleted_messages: AtomicU64,
    /// TCP connections open (HTTP and WebSocket, authenticated or not).
    pub sockets_open: AtomicU64,
    pub sockets_unauthenticated: AtomicU64,
    /// Connections refused at accept: too many unauthenticated ones from one address.
    pub sockets_refused: AtomicU64,
    /// Unauthenticated connections closed to make room (open files near the limit, or too many).
    pub sockets_shed: AtomicU64,
    /// Connections closed by a deadline (slow headers, slow body, no Hello, too old).
    pub sockets_timed_out: AtomicU64,
    /// Receivers disconnected for being `OUTBOUND_BYTES_MAX` behind.
    pub slow_consumers: AtomicU64,
    /// Password hashes refused with `server_busy`.
    pub password_hashes_refused: AtomicU64,
    /// Operations per storage transaction (group commit batch size).
    pub commit_batch_size: Histogram,
    /// Seconds spent in the transaction commit (the fsync).
    pub fsync_seconds: Histogram,
}

const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];
const SECONDS_BOUNDS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            frame_errors: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            commits_in: AtomicU64::new(0),
            lagged_connections: AtomicU64::new(0),
            gc_deleted_messages: AtomicU64::new(0),
            sockets_open: AtomicU64::new(0),
            sockets_unauthenticated: AtomicU64::new(0),
            sockets_refused: AtomicU64::new(0),
            sockets_shed: AtomicU64::new(0),
            sockets_timed_out: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            password_hashes_refused: AtomicU64::new(0),
            commit_batch_size: Histogram::new(BATCH_BOUNDS),
            fsync_seconds: Histogram::new(SECONDS_BOUNDS),
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &str, &AtomicU64); 17] = [
            ("anytime_connections_open", "gauge", "Open device WebSocket connections.", &self.connections_open),
            ("anytime_connections_total", "counter", "Device WebSocket connections accepted.", &self.connections_total),
            ("anytime_frames_in_total", "counter", "Frames received from devices.", &self.frames_in),
            ("anytime_frames_out_total", "counter", "Frames sent to devices.", &self.frames_out),
            ("anytime_frame_errors_total", "counter", "Error frames sent to devices.", &self.frame_errors),
            ("anytime_messages_in_total", "counter", "Application messages stored.", &self.messages_in),
            ("anytime_messages_out_total", "counter", "Messages pushed to devices.", &self.messages_out),
            ("anytime_commits_in_total", "counter", "MLS commits accepted.", &self.commits_in),
            (
                "anytime_lagged_connections_total",
                "counter",
                "Times a slow connection was resynced from storage.",
                &self.lagged_connections,
            ),
            (
                "anytime_gc_deleted_messages_total",
                "counter",
                "Messages deleted after every device acknowledged them or retention ran out.",
                &self.gc_deleted_messages,
            ),
            ("anytime_sockets_open", "gauge", "Open TCP connections, HTTP and WebSocket.", &self.sockets_open),
            (
                "anytime_sockets_unauthenticated",
                "gauge",
                "Open connections not (yet) authenticated.",
                &self.sockets_unauthenticated,
            ),
            (
                "anytime_sockets_refused_total",
                "counter",
                "Connections refused at accept: too many unauthenticated ones from one address.",
                &self.sockets_refused,
            ),
            (
                "anytime_sockets_shed_total",
                "counter",
                "Oldest unauthenticated connections closed to make room.",
                &self.sockets_shed,
            ),
            (
                "anytime_sockets_timed_out_total",
                "counter",
                "Connections closed by a deadline (headers, body, Hello, age).",
                &self.sockets_timed_out,
            ),
            (
                "anytime_slow_consumers_total",
                "counter",
                "Receivers disconnected for falling too far behind.",
                &self.slow_consumers,
            ),
            (
                "anytime_password_hashes_refused_total",
                "counter",
                "Logins and registrations answered server_busy (password hashing at capacity).",
                &self.password_hashes_refused,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Relaxed));
        }
        self.commit_batch_size.render(
            &mut out,
            "anytime_store_commit_batch_size",
            "Write operations per storage transaction (group commit).",
        );
        self.fsync_seconds.render(
            &mut out,
            "anytime_store_fsync_seconds",
            "Time to commit one storage transaction to disk.",
        );
        out
    }
}
