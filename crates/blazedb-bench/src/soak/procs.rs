//! The soak's child processes: the relay (`blazedb serve`) and one `blazedb sync --watch`
//! per client, started from the release CLI so the soak measures what a user would run, with
//! their memory read from `/proc/PID/status`.
//!
//! Every child is held by a [`Child`] guard that ends it when dropped, so an error anywhere in
//! the soak never leaves a relay or a sync process behind.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::limits::{CHILD_EXIT_WAIT, RELAY_START_WAIT};

/// The `blazedb` binary and what its `serve` supports.
#[derive(Debug, Clone)]
pub struct Cli {
    /// Path of the binary.
    pub path: PathBuf,
    /// Whether `serve` takes `--gc-interval` (relay-side GC on a timer).
    pub serve_has_gc_interval: bool,
}

impl Cli {
    /// Find the binary (`explicit`, else `blazedb` beside this executable, which is where
    /// `cargo build --release -p blazedb-cli` puts it) and ask it what `serve` supports.
    pub fn locate(explicit: Option<&Path>) -> Result<Cli> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe()
                .context("finding this executable's directory")?
                .with_file_name("blazedb"),
        };
        if !path.is_file() {
            bail!(
                "no blazedb binary at {}: build it with `cargo build --release -p blazedb-cli` \
                 (the soak runs the release CLI), or pass --cli PATH",
                path.display()
            );
        }
        let help = Command::new(&path)
            .args(["serve", "--help"])
            .output()
            .with_context(|| format!("running {} serve --help", path.display()))?;
        if !help.status.success() {
            bail!(
                "{} serve --help failed ({}): is this a blazedb CLI?",
                path.display(),
                help.status
            );
        }
        let text = String::from_utf8_lossy(&help.stdout);
        Ok(Cli {
            path,
            serve_has_gc_interval: text.contains("--gc-interval"),
        })
    }
}

/// A child process that is ended (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Child {
    /// What it is, for messages: `relay`, `node0`, ...
    pub name: String,
    inner: Option<std::process::Child>,
}

impl Child {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.inner.as_ref().map_or(0, |c| c.id())
    }

    /// `Some(status)` if it has exited (a crash the soak must report).
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match &mut self.inner {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// Ask it to stop the way a service manager would (SIGTERM: the CLI prints its totals and
    /// closes its database), wait up to [`CHILD_EXIT_WAIT`], then kill it. Returns how it
    /// ended, `None` if it had to be killed.
    pub fn stop(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let Some(mut child) = self.inner.take() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        // `kill` the command: the crate forbids unsafe code, so no libc::kill here.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + CHILD_EXIT_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(None)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The relay: its process and the URL clients sync with.
#[derive(Debug)]
pub struct Relay {
    /// The `blazedb serve` process.
    pub child: Child,
    /// `ws://127.0.0.1:PORT/v1/sync`.
    pub sync_url: String,
    /// Its store, `DATA/relay.db`.
    pub db_path: PathBuf,
}

/// How to start the relay.
#[derive(Debug)]
pub struct RelaySpec<'a> {
    /// Its data directory.
    pub data: &'a Path,
    /// Where its stderr goes.
    pub log: &'a Path,
    /// The static token clients present.
    pub token: &'a str,
    /// Relay-side GC interval in seconds, when `serve` supports `--gc-interval`.
    pub gc_interval_s: Option<u64>,
    /// The relay's history retention (`--history-max-age`), in seconds.
    pub history_retention_s: u64,
    /// The store's password (`BLAZEDB_PASSWORD`), if encrypted.
    pub password: Option<&'a str>,
}

/// Start `blazedb serve` on a free loopback port and wait for its "listening" line.
pub fn start_relay(cli: &Cli, spec: &RelaySpec<'_>) -> Result<Relay> {
    let mut cmd = Command::new(&cli.path);
    cmd.arg("serve").arg("--data").arg(spec.data).args([
        "--listen",
        "127.0.0.1:0",
        "--token",
        spec.token,
    ]);
    if let Some(s) = spec.gc_interval_s {
        cmd.args(["--gc-interval", &format!("{s}s")]);
    }
    cmd.args([
        "--history-max-age",
        &format!("{}s", spec.history_retention_s),
    ]);
    password_env(&mut cmd, spec.password);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(spec.log)?);
    let mut process = cmd
        .spawn()
        .with_context(|| format!("starting {} serve", cli.path.display()))?;
    let stdout = process.stdout.take().context("relay stdout")?;
    let mut child = Child {
        name: "relay".into(),
        inner: Some(process),
    };
    // The first stdout line says where it listens; read it on a thread so a relay that never
    // prints cannot hang the soak past RELAY_START_WAIT.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let r = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
        // Drain the rest (the totals at exit) so the relay never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = match rx.recv_timeout(RELAY_START_WAIT) {
        Ok(r) => r.context("reading the relay's first line")?,
        Err(_) => {
            let _ = child.stop();
            bail!(
                "the relay printed nothing within {RELAY_START_WAIT:?}; see {}",
                spec.log.display()
            );
        }
    };
    let v: serde_json::Value = serde_json::from_str(line.trim()).with_context(|| {
        format!(
            "the relay's first line is not JSON ({:?}); see {}",
            line.trim(),
            spec.log.display()
        )
    })?;
    let (Some(sync_url), Some(db)) = (v["sync"].as_str(), v["data"].as_str()) else {
        bail!("the relay's first line has no \"sync\" or \"data\": {v}");
    };
    Ok(Relay {
        child,
        sync_url: sync_url.to_owned(),
        db_path: PathBuf::from(db),
    })
}

/// Start `blazedb sync DB URL --watch --token T` for one client.
pub fn start_sync(
    cli: &Cli,
    name: &str,
    db: &Path,
    url: &str,
    token: &str,
    password: Option<&str>,
    out_dir: &Path,
) -> Result<Child> {
    // The relay authenticates the WebSocket upgrade before any frame: the ws:// client
    // sends `--token` as `Authorization: Bearer` there (and in HELLO). Not as `?token=` in
    // the URL, which `sync` refuses (it would be printed wherever the peer is named).
    let mut cmd = Command::new(&cli.path);
    cmd.arg("sync")
        .arg(db)
        .arg(url)
        .args(["--watch", "--token", token]);
    password_env(&mut cmd, password);
    cmd.stdin(Stdio::null())
        .stdout(log_file(&out_dir.join(format!("{name}.sync.out")))?)
        .stderr(log_file(&out_dir.join(format!("{name}.sync.log")))?);
    let process = cmd
        .spawn()
        .with_context(|| format!("starting {} sync for {name}", cli.path.display()))?;
    Ok(Child {
        name: name.to_owned(),
        inner: Some(process),
    })
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/PID/status`; Linux only).
pub fn rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {path} (Linux only)"))?;
    parse_vm_rss_kb(&text).with_context(|| format!("no VmRSS line in {path}"))
}

/// The `VmRSS:   12345 kB` line of a `/proc/PID/status` text.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn password_env(cmd: &mut Command, password: Option<&str>) {
    match password {
        Some(p) => cmd.env("BLAZEDB_PASSWORD", p),
        None => cmd.env_remove("BLAZEDB_PASSWORD"),
    };
    // A token in the environment would be ignored (--token wins), but keep the children's
    // environment to what the soak states.
    cmd.env_remove("BLAZEDB_TOKEN");
}

fn log_file(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_status_text() {
        let status = "Name:\tblazedb\nVmPeak:\t  99999 kB\nVmRSS:\t   23456 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kb(status), Some(23456));
        assert_eq!(parse_vm_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn rss_of_this_process_is_positive() {
        let kb = rss_kb(std::process::id()).unwrap();
        assert!(kb > 100, "{kb} KiB");
    }

    #[test]
    fn a_dropped_child_is_ended() {
        let process = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = process.id();
        let child = Child {
            name: "sleep".into(),
            inner: Some(process),
        };
        let started = Instant::now();
        drop(child);
        assert!(started.elapsed() < CHILD_EXIT_WAIT);
        // Reaped: no /proc entry left (or, if the pid was reused at once, not a sleep).
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sleep");
    }
}
