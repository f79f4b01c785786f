//! `cargo xtask`: development automation that would outgrow a shell script (rust-analyzer's
//! pattern). Commands:
//!
//! - `web`  — builds the web client: the wasm32 core (`anytime-web`), its JS bindings
//!   (wasm-bindgen-cli of exactly the version in Cargo.lock, installed if missing) and the static
//!   UI, into `target/web/dist`. Installs the rustup target if missing.
//! - `run [ARGS]` — `web`, then `anytime serve ARGS` (release build), which serves that
//!   directory at `/`.
//! - `test [ARGS]` — `web`, then `cargo test --workspace ARGS` (which includes the browser tests
//!   in headless Chromium); with `ANYTIME_TEST_PG_URL` set, also the PostgreSQL store tests,
//!   which are `#[ignore]`d (and reported as ignored) otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root()?;
    match task.as_str() {
        "web" => build_web(&root).map(|_| ()),
        "run" => {
            if let Some(running) = running_server(&rest) {
                println!("{running}");
                return Ok(());
            }
            build_web(&root)?;
            let mut serve = cargo(&root);
            serve.args(["run", "--release", "--package", "anytime-cli", "--", "serve"]).args(&rest);
            run(serve)
        }
        "test" => {
            build_web(&root)?;
            ensure_browser_tools()?;
            let mut test = cargo(&root);
            test.args(["test", "--workspace"]).args(&rest);
            run(test)?;
            // Tests that need PostgreSQL are ignored (and reported so) unless it is configured.
            if std::env::var_os("ANYTIME_TEST_PG_URL").is_some() {
                let mut postgres = cargo(&root);
                postgres.args(["test", "--package", "anytime-store-postgres"]).args(&rest);
                if !rest.iter().any(|a| a == "--") {
                    postgres.arg("--");
                }
                postgres.arg("--ignored");
                run(postgres)?;
            } else {
                eprintln!("xtask: the PostgreSQL store tests were ignored: set ANYTIME_TEST_PG_URL to run them");
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask web | run [SERVE ARGS] | test [CARGO TEST ARGS]"),
    }
}

/// The server already running on the data directory `run` would use, described for the user.
/// `anytime serve` keeps an flock on `anytime.lock` there with a note (`pid=`, `url=` lines);
/// starting a second server on the same directory would fail anyway (see
/// crates/anytime-cli/src/dir_lock.rs), so say where the running one is instead.
fn running_server(serve_args: &[String]) -> Option<String> {
    let from_args = serve_args.iter().enumerate().find_map(|(i, arg)| match arg.strip_prefix("--data") {
        Some("") => serve_args.get(i + 1).map(PathBuf::from),
        Some(value) => value.strip_prefix('=').map(PathBuf::from),
        None => None,
    });
    let data_dir = from_args
        .or_else(|| std::env::var_os("ANYTIME_DATA").map(PathBuf::from))
        .or_else(|| dirs::data_dir().map(|d| d.join("anytime")))?;
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(data_dir.join("anytime.lock")).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {}
        // Free (or unreadable): nothing is running there.
        _ => return None,
    }
    let mut note = String::new();
    std::io::Read::read_to_string(&mut file, &mut note).ok()?;
    let field = |key: &str| note.lines().find_map(|l| l.strip_prefix(key)).map(str::to_owned);
    let url = field("url=").unwrap_or_else(|| "(still starting)".into());
    let pid = field("pid=").unwrap_or_else(|| "?".into());
    Some(format!(
        "Anytime is already running at {url} (process {pid}, data directory {}); open that URL, or stop that server first",
        data_dir.display()
    ))
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest.ancestors().nth(2).context("xtask lives in crates/xtask")?.to_path_buf())
}

fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    command
}

fn run(mut command: Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The wasm-bindgen version the lock file pins: the CLI must match it exactly.
fn wasm_bindgen_version(root: &Path) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("while reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(version.trim_end_matches('"').to_owned());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen entry")
}

fn ensure_tools(root: &Path) -> anyhow::Result<()> {
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|t| t.trim() == "wasm32-unknown-unknown") {
        eprintln!("xtask: installing the wasm32-unknown-unknown target");
        run({
            let mut c = Command::new("rustup");
            c.args(["target", "add", "wasm32-unknown-unknown"]);
            c
        })
        .context("the web client needs `rustup target add wasm32-unknown-unknown`")?;
    }
    let wanted = wasm_bindgen_version(root)?;
    let installed = output(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    if installed.split_whitespace().nth(1) != Some(wanted.as_str()) {
        eprintln!("xtask: installing wasm-bindgen-cli {wanted} (matches Cargo.lock; takes a few minutes once)");
        let mut install = cargo(root);
        install.args(["install", "wasm-bindgen-cli", "--version", &wanted]);
        run(install).context("could not install wasm-bindgen-cli")?;
    }
    Ok(())
}

/// The browser tests need Chromium and Node (Debian packages); installs them where apt can.
fn ensure_browser_tools() -> anyhow::Result<()> {
    let have = |path: &str| Path::new(path).is_file();
    let mut missing = Vec::new();
    if std::env::var_os("CHROMIUM").is_none() && !have("/usr/bin/chromium") {
        missing.extend(["chromium", "fonts-noto-color-emoji"]);
    }
    if output(Command::new("node").arg("--version")).is_none() {
        missing.extend(["nodejs", "npm"]);
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} for the browser tests", missing.join(" "));
    let root_user = output(Command::new("id").arg("-u")).is_some_and(|id| id.trim() == "0");
    let apt = |args: &[&str]| {
        let mut c = if root_user { Command::new("apt-get") } else { Command::new("sudo") };
        if !root_user {
            c.arg("apt-get");
        }
        c.args(args);
        run(c)
    };
    apt(&["update", "-qq"])
        .and_then(|()| apt(&[&["install", "-y", "-qq"][..], &missing].concat()))
        .with_context(|| format!("the browser tests need {}: install them and run again", missing.join(" ")))
}

/// Builds the web client into target/web/dist; returns that directory.
fn build_web(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_tools(root)?;
    let mut build = cargo(root);
    build.args(["build", "--package", "anytime-web", "--target", "wasm32-unknown-unknown", "--profile", "web"]);
    run(build)?;
    let target = root.join("target");
    let dist = target.join("web/dist");
    let pkg = dist.join("pkg");
    std::fs::create_dir_all(&pkg).with_context(|| format!("while creating {}", pkg.display()))?;
    let wasm = target.join("wasm32-unknown-unknown/web/anytime_web.wasm");
    let mut bindgen = Command::new("wasm-bindgen");
    bindgen.args(["--target", "web", "--no-typescript", "--out-dir"]).arg(&pkg).arg(&wasm);
    run(bindgen)?;
    let static_dir = root.join("crates/anytime-web/static");
    copy_dir(&static_dir, &dist)?;
    // Precompressed copies: the server sends `.gz` to browsers that accept gzip (the wasm shrinks
    // to a third). Debian's gzip, not a compression crate, since it is only a build step.
    let compressible =
        [pkg.join("anytime_web_bg.wasm"), pkg.join("anytime_web.js"), dist.join("app.js"), dist.join("style.css")];
    let mut gzip = Command::new("gzip");
    gzip.args(["-9", "--keep", "--force"]).args(&compressible);
    if let Err(error) = run(gzip) {
        eprintln!("xtask: no precompressed files ({error:#}); the server will send them uncompressed");
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    let wasm = pkg.join("anytime_web_bg.wasm");
    eprintln!(
        "xtask: web client built in {} (wasm {} KiB, {} KiB gzipped)",
        dist.display(),
        size(&wasm),
        size(&wasm.with_extension("wasm.gz"))
    );
    Ok(dist)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("while reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("while copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
