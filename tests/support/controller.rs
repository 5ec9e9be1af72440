//! The controller under test, as a real process (so tests can SIGKILL it at any instant and restart it).

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
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
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
