//! Tidy: the rules ARCHITECTURE.md states, checked against the code (in the style of
//! rust-analyzer's `xtask/tests/tidy.rs`). A rule that is only written down drifts; this test
//! fails the build when the code breaks one, and says which rule and where.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace crates each crate may depend on (normal dependencies). Dependencies point down
/// the layers of ARCHITECTURE.md only; a new edge is a design decision, made here on purpose.
const ALLOWED_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("anytime-proto", &[]),
    ("anytime-client", &["anytime-proto", "anytime-media"]),
    ("anytime-media", &["anytime-proto"]),
    ("anytime-ledger", &["anytime-proto"]),
    ("anytime-wallet", &["anytime-proto", "anytime-ledger"]),
    ("anytime-server-core", &["anytime-proto", "anytime-ledger", "anytime-wallet", "anytime-media"]),
    (
        "anytime-store-sqlite",
        &["anytime-proto", "anytime-server-core", "anytime-ledger", "anytime-wallet", "anytime-media"],
    ),
    (
        "anytime-store-postgres",
        &["anytime-proto", "anytime-server-core", "anytime-ledger", "anytime-wallet", "anytime-media"],
    ),
    ("anytime-store-memory", &["anytime-proto", "anytime-server-core"]),
    ("anytime-store-conformance", &["anytime-proto", "anytime-server-core"]),
    (
        "anytime-server",
        &[
            "anytime-proto",
            "anytime-server-core",
            "anytime-store-sqlite",
            "anytime-store-postgres",
            "anytime-ledger",
            "anytime-wallet",
            "anytime-media",
        ],
    ),
    ("anytime-client-tokio", &["anytime-proto"]),
    ("anytime-client-store-sqlite", &["anytime-proto", "anytime-client"]),
    ("anytime-web", &["anytime-proto", "anytime-client", "anytime-media"]),
    ("anytime-testkit", &["anytime-proto", "anytime-client-tokio"]),
    ("anytime-load", &["anytime-proto", "anytime-testkit"]),
    (
        "anytime-cli",
        &[
            "anytime-proto",
            "anytime-client",
            "anytime-client-store-sqlite",
            "anytime-client-tokio",
            "anytime-server",
            "anytime-server-core",
            "anytime-media",
        ],
    ),
    ("anytime-sim", &["anytime-proto", "anytime-client", "anytime-server-core", "anytime-store-memory"]),
    ("xtask", &[]),
];

/// Crates that hold protocol logic and state: no I/O, no clock, no randomness of their own
/// (time and randomness come in through `Env`, the network through `Transport`).
const CORE_CRATES: &[&str] =
    &["anytime-proto", "anytime-client", "anytime-server-core", "anytime-ledger", "anytime-wallet", "anytime-media"];

/// Crates a core crate must not depend on directly: network, storage, runtimes' I/O, OS
/// randomness.
const IO_CRATES: &[&str] = &[
    "axum",
    "hyper",
    "hyper-util",
    "tower",
    "reqwest",
    "rusqlite",
    "tokio-postgres",
    "async-nats",
    "tokio-tungstenite",
    "libc",
    "rand",
    "getrandom",
];

/// Known exceptions to `IO_CRATES`, each with its reason.
const IO_EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "anytime-client",
    "getrandom",
    "wasm32 only: openmls' crypto provider draws OS randomness and needs getrandom's JS backend in the \
     browser; injecting the MLS provider's randomness is still to do (issue 14)",
)];

/// Text that means a clock, a timer, OS randomness, I/O or an unbounded queue. Checked in core
/// crates' sources outside comments.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio::time",
    "SystemTime",
    "Instant::now",
    "thread::sleep",
    "tokio::net",
    "tokio::fs",
    "std::fs",
    "TcpStream",
    "UdpSocket",
    "getrandom::",
    "rand::",
    "thread_rng",
    "OsRng",
];

/// Crates whose numeric bounds must live in `anytime-proto/src/limits.rs`.
const LIMITS_CRATES: &[&str] = &[
    "anytime-proto",
    "anytime-ledger",
    "anytime-wallet",
    "anytime-media",
    "anytime-client",
    "anytime-server-core",
    "anytime-server",
    "anytime-store-sqlite",
    "anytime-store-postgres",
    "anytime-store-memory",
    "anytime-client-store-sqlite",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

fn metadata() -> serde_json::Value {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata JSON")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code of a line: what precedes a `//` comment (string contents with `//` are rare enough
/// in these crates not to matter), or nothing for doc and block-comment lines.
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") || trimmed.starts_with('*') || trimmed.starts_with("/*") {
        return "";
    }
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

fn crate_src(name: &str) -> PathBuf {
    workspace_root().join("crates").join(name).join("src")
}

#[test]
fn dependencies_point_down_the_layers() {
    let metadata = metadata();
    let packages = metadata["packages"].as_array().expect("packages");
    let workspace: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED_DEPENDENCIES.iter().copied().collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(allowed) = allowed.get(name) else {
            problems.push(format!("{name}: a new crate; add it to ALLOWED_DEPENDENCIES (and ARCHITECTURE.md)"));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep = dependency["name"].as_str().unwrap_or_default();
            let normal = dependency["kind"].is_null();
            if normal && workspace.contains(dep) && !allowed.contains(&dep) {
                problems.push(format!("{name} depends on {dep}: not allowed by the layering"));
            }
            if normal && CORE_CRATES.contains(&name) && IO_CRATES.contains(&dep) {
                let excepted = IO_EXCEPTIONS.iter().any(|(c, d, _)| *c == name && *d == dep);
                if !excepted {
                    problems.push(format!("{name} (a core crate) depends on {dep}, an I/O or randomness crate"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "dependency rules broken:\n{}", problems.join("\n"));
}

#[test]
fn core_crates_read_no_clock_draw_no_randomness_and_do_no_io() {
    let mut problems = Vec::new();
    for name in CORE_CRATES {
        for file in rust_files(&crate_src(name)) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (number, line) in text.lines().enumerate() {
                let code = code_of(line);
                for pattern in FORBIDDEN_IN_CORE {
                    if code.contains(pattern) {
                        problems.push(format!("{}:{}: `{pattern}` in a core crate", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "core crates must take time, timers and randomness from `Env` and do I/O in their shells:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_channel_is_bounded() {
    let mut problems = Vec::new();
    for file in rust_files(&workspace_root().join("crates")) {
        // Sources only; a test may use whatever it likes, and this file names the pattern.
        let path = file.to_string_lossy();
        if !path.contains("/src/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            if code_of(line).contains("unbounded") {
                problems.push(format!("{}:{}", file.display(), number + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unbounded channels (bound them and say what happens when full):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_bound_is_in_limits_rs() {
    let limits = crate_src("anytime-proto").join("limits.rs");
    let mut problems = Vec::new();
    for name in LIMITS_CRATES {
        for file in rust_files(&crate_src(name)) {
            if file == limits {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read source");
            for (number, line) in text.lines().enumerate() {
                let code = code_of(line).trim_start();
                let code = code.strip_prefix("pub ").or_else(|| code.strip_prefix("pub(crate) ")).unwrap_or(code);
                let Some(rest) = code.strip_prefix("const ") else { continue };
                let constant = rest.split(':').next().unwrap_or_default().trim();
                let is_bound =
                    ["_MAX", "_MIN"].iter().any(|s| constant.ends_with(s) || constant.contains(&format!("{s}_")));
                if is_bound {
                    problems.push(format!("{}:{}: {constant}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "bounds belong in crates/anytime-proto/src/limits.rs, with their reason:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_rules_catch_what_they_are_for() {
    // The scanners themselves: a comment is not code, code is.
    assert_eq!(code_of("    // tokio::time::sleep"), "");
    assert_eq!(code_of("/// uses tokio::time"), "");
    assert!(code_of("let t = tokio::time::Instant::now(); // why").contains("tokio::time"));
    assert!(code_of("let (tx, rx) = mpsc::unbounded_channel();").contains("unbounded"));
}
