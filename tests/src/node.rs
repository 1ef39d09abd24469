//! Real faults on the test topology's MariaDB processes: kill -9, SIGSTOP /
//! SIGCONT, and starting a stopped server again with its own config.

use mysql_async::prelude::Queryable;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One server of the topology (`primary`, `replica1`, `replica2`).
pub struct Node {
    pub name: &'static str,
    pub address: String,
    dir: PathBuf,
}

impl Node {
    pub fn new(name: &'static str, address: &str) -> Node {
        let root = std::env::var("SLUICE_TEST_TOPOLOGY_DIR")
            .expect("SLUICE_TEST_TOPOLOGY_DIR is not set: run the tests through scripts/test.sh");
        Node {
            name,
            address: address.to_string(),
            dir: PathBuf::from(root).join(name),
        }
    }

    /// The server's error log so far (empty if it cannot be read).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("mariadbd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, sig: i32) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} has no pid file", self.name));
        // SAFETY: kill(2) with a pid read from the server's pid file.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to {} ({pid})", self.name);
    }

    /// kill -9, then wait until the process is gone.
    pub fn kill9(&self) {
        let pid = self.pid().expect("pid");
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: kill(pid, 0) only probes for existence.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts the server again with its config and waits until it answers.
    pub async fn start(&self) {
        let cnf = self.dir.join("my.cnf");
        // Started through a shell in the background so the server outlives
        // the test and is reaped by init, like the topology script's servers.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mariadbd --defaults-file='{}' </dev/null >/dev/null 2>&1 &",
                cnf.display()
            ))
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        assert!(status.success(), "start {}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = mysql_async::Conn::new(crate::direct_opts(&self.address)).await {
                if c.query_drop("SELECT 1").await.is_ok() {
                    let _ = c.disconnect().await;
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} did not come back", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs statements directly on this server as `app`.
    pub async fn exec(&self, sql: &str) {
        let mut c = mysql_async::Conn::new(crate::direct_opts(&self.address))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name));
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {}: {e}", self.name));
        let _ = c.disconnect().await;
    }
}

/// The three servers of the topology.
pub fn nodes() -> [Node; 3] {
    let t = crate::Topology::from_env();
    [
        Node::new("primary", &t.primary),
        Node::new("replica1", &t.replica1),
        Node::new("replica2", &t.replica2),
    ]
}
