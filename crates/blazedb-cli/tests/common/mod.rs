//! Helpers shared by the integration tests: a temporary database and a runner for the real
//! `blazedb` binary.

// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value as Json;

/// The `blazedb` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

/// A database file in its own temporary directory, removed at the end of the test.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    /// Passed as `BLAZEDB_PASSWORD` when set.
    pub password: Option<String>,
}

impl TestDb {
    /// An unencrypted database (the file is created by the first write).
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("test.db");
        TestDb {
            dir,
            path,
            password: None,
        }
    }

    /// A database opened with `password` through `BLAZEDB_PASSWORD`.
    pub fn encrypted(password: &str) -> TestDb {
        TestDb {
            password: Some(password.to_owned()),
            ..TestDb::new()
        }
    }

    /// A file path beside the database.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `blazedb COMMAND DB ARGS..` with this database's password and nothing else from the
    /// developer's environment.
    pub fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut cmd = blazedb_command(self.password.as_deref());
        cmd.arg(command).arg(&self.path).args(args);
        cmd
    }

    /// Run `blazedb COMMAND DB ARGS..`.
    pub fn run(&self, command: &str, args: &[&str]) -> Run {
        Run::of(self.command(command, args), None)
    }

    /// Run `blazedb COMMAND DB ARGS..` with `password` in `BLAZEDB_PASSWORD` instead of this
    /// database's own.
    pub fn run_with_password(&self, password: Option<&str>, command: &str, args: &[&str]) -> Run {
        let mut cmd = blazedb_command(password);
        cmd.arg(command).arg(&self.path).args(args);
        Run::of(cmd, None)
    }

    /// Run `blazedb COMMAND DB ARGS..` with `stdin` as its standard input.
    pub fn run_with_stdin(&self, command: &str, args: &[&str], stdin: &str) -> Run {
        Run::of(self.command(command, args), Some(stdin))
    }

    /// Insert a record and return its id.
    pub fn put(&self, collection: &str, json: &str) -> String {
        self.run("put", &[collection, json])
            .success()
            .stdout
            .trim()
            .to_owned()
    }

    /// A record as JSON (panics if the command fails).
    pub fn get(&self, collection: &str, id: &str) -> Json {
        self.run("get", &[collection, id]).success().json()
    }
}

/// Run `blazedb ARGS..` with `BLAZEDB_PASSWORD` set to `password` (or removed).
pub fn run_blazedb<S: AsRef<OsStr>>(password: Option<&str>, args: &[S]) -> Run {
    let mut cmd = blazedb_command(password);
    cmd.args(args);
    Run::of(cmd, None)
}

/// `blazedb` with `BLAZEDB_PASSWORD` set to `password` (or removed).
pub fn blazedb_command(password: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("BLAZEDB_PASSWORD")
        .env_remove("BLAZEDB_NEW_PASSWORD");
    if let Some(p) = password {
        cmd.env("BLAZEDB_PASSWORD", p);
    }
    cmd
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Run `cmd` to completion, feeding it `stdin` if given.
    pub fn of(mut cmd: Command, stdin: Option<&str>) -> Run {
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn blazedb");
        if let Some(text) = stdin {
            // Write from a thread: a large input could otherwise fill the pipe while the child
            // blocks writing its own output.
            let mut pipe = child.stdin.take().expect("stdin pipe");
            let text = text.to_owned();
            std::thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            });
        }
        let out = child.wait_with_output().expect("wait for blazedb");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Assert the command succeeded, showing its stderr if not.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success, stderr: {}",
            self.stderr
        );
        self
    }

    /// Assert the command failed with `code` and reported it as one `error: ` line.
    #[track_caller]
    pub fn failure(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {} stderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {:?}",
            self.stderr
        );
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {:?}", self.stderr);
        self
    }

    /// Stdout as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }

    /// Stdout as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

/// The values of `field` in `records`, in order.
pub fn column(records: &[Json], field: &str) -> Vec<Json> {
    records.iter().map(|r| r[field].clone()).collect()
}

/// Whether `haystack` contains `needle` anywhere in its bytes.
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).expect("read file");
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// A small tmpfs of its own, for the tests of a full disk and of inodes (see the crate).
#[allow(unused_imports)]
pub use blazedb_test_disks::SmallDisk;

/// JSON lines of `n` records of about `bytes` each (`{"n": i, "s": "xxx…"}`).
pub fn json_lines(n: usize, bytes: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"n\": {i}, \"s\": \"{}\"}}\n", "x".repeat(bytes)))
        .collect()
}
