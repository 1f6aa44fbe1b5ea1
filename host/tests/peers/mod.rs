//! Real servers on loopback for the connector tests: an SMTP server
//! (aiosmtpd), a CalDAV server (Radicale), and small HTTP servers written
//! here (a Stripe-style payments API, a recorder, a redirector). Each is
//! started by the test that needs it and stopped when dropped.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod caldav;
pub mod http;
pub mod keel_serve;
pub mod openai;
pub mod otlp;
pub mod payments;
pub mod plugin_index;
pub mod smtp;
pub mod webdriver;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The pip command that installs the Python peers.
pub const PIP_INSTALL: &str = "pip install -r tests/peers/requirements.txt";

/// `tests/peers/` of the repository.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

/// Fails the test with the fix when python3 or `module` is missing.
pub fn require_python_module(module: &str, package: &str) {
    let output = Command::new("python3").args(["-c", &format!("import {module}")]).output();
    match output {
        Err(e) => panic!("python3 is not on PATH ({e}): install Python 3, then run `{PIP_INSTALL}`"),
        Ok(o) if !o.status.success() => panic!(
            "the Python package `{package}` (module `{module}`) is missing: run `{PIP_INSTALL}` (from the repository root)\n{}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(_) => {}
    }
}

/// A child process killed and reaped when dropped.
pub struct PeerProcess {
    pub name: &'static str,
    child: Child,
}

impl PeerProcess {
    pub fn new(name: &'static str, child: Child) -> PeerProcess {
        PeerProcess { name, child }
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding a free port").local_addr().unwrap().port()
}

/// Waits until `addr` accepts TCP connections, or panics naming `what`.
pub fn wait_for_port(addr: SocketAddr, what: &str, process: &mut PeerProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = process.child().try_wait() {
            panic!("{what} exited ({status}) before listening on {addr}; its stderr is above");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {addr} within 20 s");
}

/// The `keel.toml` sections that point the `mail` and `payments`
/// connectors at these peers, the payments key read from `key_file`.
pub fn connector_config(
    smtp: &smtp::SmtpPeer,
    payments: &payments::PaymentsPeer,
    key_file: &std::path::Path,
) -> String {
    format!(
        "[connectors.mail]\nserver = \"127.0.0.1:{}\"\nfrom = \"ops@acme.test\"\n\n\
         [connectors.payments]\nbase_url = \"{}\"\n\n[secrets.stripe_key]\nfile = \"{}\"\n",
        smtp.port,
        payments.base_url(),
        key_file.display()
    )
}

/// A fresh workspace folder whose keel.toml is `head` and the sections
/// wiring `mail` and `payments` to these peers, the payments key `api_key`
/// in a file keel reads; nothing installed, nothing opened.
pub fn connected_config(
    head: &str,
    api_key: &str,
    smtp: &smtp::SmtpPeer,
    payments: &payments::PaymentsPeer,
) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = crate::common::workspace();
    let key_file = dir.path().join("stripe_key");
    std::fs::write(&key_file, format!("{api_key}\n")).unwrap();
    let config = format!("{head}\n{}", connector_config(smtp, payments, &key_file));
    std::fs::write(path.join("keel.toml"), config).unwrap();
    (dir, path)
}

/// A workspace wired to fresh mail and payments peers, with `mail`,
/// `payments` and `proposer` installed.
pub struct Connected {
    pub dir: tempfile::TempDir,
    pub ws: keel_host::workspace::Workspace,
    pub rt: keel_host::runtime::Runtime,
    pub smtp: smtp::SmtpPeer,
    pub payments: payments::PaymentsPeer,
}

/// [`Connected`] with `head` at the top of keel.toml (limits, policy...)
/// and the payments peer accepting `api_key`, read from a file by keel;
/// `prepare` writes more into the workspace folder before it is opened.
pub async fn connected_workspace(head: &str, api_key: &str, prepare: impl FnOnce(&std::path::Path)) -> Connected {
    let smtp = smtp::SmtpPeer::start(None);
    let payments = payments::PaymentsPeer::start(api_key).await;
    let (dir, path) = connected_config(head, api_key, &smtp, &payments);
    prepare(&path);
    let ws = keel_host::workspace::Workspace::open(&path).unwrap();
    let rt = ws.runtime().unwrap();
    install_mail_payments_and_proposer(&ws, &rt, &smtp, &payments);
    Connected { dir, ws, rt, smtp, payments }
}

/// Installs `mail` and `payments`, each granted exactly its peer's
/// loopback address, and the `proposer` agent.
pub fn install_mail_payments_and_proposer(
    ws: &keel_host::workspace::Workspace,
    rt: &keel_host::runtime::Runtime,
    smtp: &smtp::SmtpPeer,
    payments: &payments::PaymentsPeer,
) {
    let api = payments.base_url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    crate::common::install_connector(ws, rt, crate::common::guests::MAIL, &[format!("127.0.0.1:{}", smtp.port)]);
    crate::common::install_connector(ws, rt, crate::common::guests::PAYMENTS, &[api]);
    crate::common::install(ws, rt, crate::common::guests::PROPOSER);
}
