//! The real `keel serve` binary on a loopback port: not a peer but the
//! system under test, started the way the peers are.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `keel serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The line it printed when it started listening.
    pub startup: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `keel serve` on workspace `workspace` with `extra` flags and
    /// waits for its startup line.
    pub fn start(workspace: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(workspace, extra, &[])
    }

    /// [`Server::start`] with environment variables set (and `RUST_LOG`
    /// removed, so the server logs at its defaults).
    pub fn start_with_env(workspace: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("--workspace")
            .arg(workspace)
            .args(["serve", "--listen", "127.0.0.1:0", "--interval-seconds", "1"])
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut startup = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut startup).unwrap();
        assert!(startup.starts_with("keel serve: listening on http://"), "{startup}");
        let addr = startup.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
        Server { addr: addr.parse().unwrap(), child, startup }
    }

    /// The `host` header naming the server.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Sends SIGTERM and waits (up to 30 s) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "keel serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 request with these headers (`host` included); status and
/// JSON body (`Null` when the body is not JSON).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, body) = super::http::request(addr, method, path, headers, body.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Rotates the workspace's API token with the CLI and returns it.
pub fn rotate_token(workspace: &Path) -> String {
    let rotated = crate::common::keel(workspace, &["token", "rotate"]);
    assert!(rotated.status.success(), "{}", crate::common::stderr(&rotated));
    crate::common::stdout(&rotated).trim().to_owned()
}
