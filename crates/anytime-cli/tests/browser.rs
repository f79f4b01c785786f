//! The web client in a real browser: runs the Playwright suite in crates/anytime-web/tests/browser
//! (Node + playwright-core driving Debian's headless Chromium) against this crate's `anytime`
//! binary, which serves the built web client. `cargo xtask test` builds the web client first;
//! `.ci/run` installs Chromium and Node packages.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn web_client_end_to_end_in_headless_chromium() {
    let root = workspace();
    let web = root.join("target/web/dist");
    assert!(
        web.join("index.html").is_file() && web.join("pkg/anytime_web_bg.wasm").is_file(),
        "the web client is not built: run `cargo xtask web` (or `cargo xtask test`, which builds it and runs every test)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "no Chromium at {chromium}: `apt-get install -y chromium` (or set CHROMIUM)"
    );
    let suite = root.join("crates/anytime-web/tests/browser");
    if !suite.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&suite)
            .status()
            .expect("npm is needed for the browser tests (apt-get install -y npm)");
        assert!(status.success(), "npm ci failed in {}", suite.display());
    }
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .args(["chat.test.mjs", "history.test.mjs"])
        .current_dir(&suite)
        .env("ANYTIME_BIN", env!("CARGO_BIN_EXE_anytime"))
        .env("ANYTIME_WEB_DIR", &web)
        .env("CHROMIUM", &chromium)
        .env("ANYTIME_ARTIFACTS", root.join("target/browser-artifacts"))
        .output()
        .expect("node is needed for the browser tests (apt-get install -y nodejs)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{report}");
    assert!(output.status.success(), "browser tests failed:\n{report}");
}
