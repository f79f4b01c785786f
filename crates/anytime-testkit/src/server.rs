//! A real `anytime serve` process on loopback, with its own data directory and captured log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub extra_args: Vec<String>,
    /// `ANYTIME_LOG` filter; debug by default so the payload-leak test sees everything logged.
    pub log_filter: String,
    /// Open-files limit (soft and hard) for the server process, to test behaviour near it.
    pub open_files_limit: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            extra_args: vec!["--no-rate-limits".into()],
            log_filter: "debug".into(),
            open_files_limit: None,
        }
    }
}

pub struct ServerProcess {
    binary: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    options: ServerOptions,
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `binary serve` with a data directory under `work_dir` and waits for its URL.
    pub fn start(binary: &Path, work_dir: &Path, options: ServerOptions) -> anyhow::Result<ServerProcess> {
        let data_dir = work_dir.join("data");
        let log_path = work_dir.join("server.log");
        let mut server = ServerProcess {
            binary: binary.to_owned(),
            data_dir,
            log_path,
            options,
            child: None,
            addr: "127.0.0.1:0".parse()?,
        };
        server.spawn("127.0.0.1:0".parse()?)?;
        Ok(server)
    }

    fn spawn(&mut self, listen: SocketAddr) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("while opening the server log")?;
        let mut command = match self.options.open_files_limit {
            // `ulimit -n` in sh sets the soft and the hard limit, so the server cannot raise it.
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(&self.binary);
                sh
            }
            None => Command::new(&self.binary),
        };
        let mut child = command
            .arg("serve")
            .arg("--data")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .args(&self.options.extra_args)
            .env("ANYTIME_LOG", &self.options.log_filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("while starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).context("while reading the server's first line")?;
        // Keep reading (and discarding) so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = line
            .trim()
            .strip_prefix("Anytime is running at http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .with_context(|| format!("unexpected first line from the server: {line:?}"))?;
        self.addr = url.parse().with_context(|| format!("bad address {url:?}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// The server's process id (for memory measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("anytime.sqlite3")
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGKILL: no shutdown code runs, as in a crash or power cut of the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("while killing the server")?;
            child.wait().context("while reaping the server")?;
        }
        Ok(())
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server not running")?;
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        anyhow::bail!("server did not exit within 10 s of SIGTERM")
    }

    /// Starts the server again on the same data directory and the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let addr = self.addr;
        // The old socket may linger briefly; retry the same port a few times.
        let mut last = None;
        for _ in 0..50 {
            match self.spawn(addr) {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
