//! The controller under test, as a real process (so tests can SIGKILL it at any instant and restart it).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::stack;

pub struct ControllerProcess {
    child: Option<Child>,
    env: HashMap<String, String>,
    log: PathBuf,
    pub starts: u32,
}

impl ControllerProcess {
    /// Starts `forensic-capture run` with the stack's AWS and Kubernetes settings plus `env`.
    pub fn start(env: &[(&str, String)], log_name: &str) -> Self {
        let mut all: HashMap<String, String> = stack().vars().clone();
        all.insert("FC_S3_FORCE_PATH_STYLE".into(), "true".into());
        all.insert("FC_LOG_FORMAT".into(), "text".into());
        all.insert("RUST_LOG".into(), std::env::var("FC_TEST_CONTROLLER_LOG").unwrap_or_else(|_| "info,forensic_capture=debug".into()));
        // Many controllers run at once here: each gets a free port (see metrics_address).
        all.insert("FC_METRICS_BIND_ADDRESS".into(), "127.0.0.1:0".into());
        // A restarted process is a new candidate that would wait a whole lease duration for the Lease its
        // killed predecessor held; tests of one controller turn election off, tests/leader_election.rs on.
        all.insert("FC_LEADER_ELECT".into(), "false".into());
        for (k, v) in env {
            all.insert(k.to_string(), v.clone());
        }
        let dir = PathBuf::from(stack().var("FC_STACK_DIR")).join("logs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut process = ControllerProcess { child: None, env: all, log: dir.join(format!("{log_name}.log")), starts: 0 };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_forensic-capture"))
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the controller");
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL: no cleanup, no graceful shutdown, as when a node dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    /// SIGTERM, then waits up to `timeout` for the exit: its status, or None if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait for the controller") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process has exited (its status then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("wait for the controller")
    }

    /// The address its /metrics, /healthz and /readyz are served on, as it logged it (last start).
    pub fn metrics_address(&self, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let logged = log.lines().rev().filter(|l| l.contains("serving /metrics")).find_map(|line| {
                let line = without_colours(line);
                let (_, rest) = line.split_once("address=").or_else(|| line.split_once("\"address\":\""))?;
                rest.split(|c: char| c == '"' || c.is_whitespace()).next()?.parse().ok()
            });
            if let Some(address) = logged {
                return address;
            }
            assert!(Instant::now() < deadline, "the controller logged no metrics address in {timeout:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The text log format colours field names (ANSI escapes), even into a file.
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}
