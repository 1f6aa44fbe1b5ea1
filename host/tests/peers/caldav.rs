//! A CalDAV server on loopback: Radicale with a throwaway config (any
//! login accepted, calendars in a temp dir) and one calendar created.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use super::http::request;
use super::{PeerProcess, free_port, require_python_module, wait_for_port};

pub struct CaldavPeer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/USER/CALENDAR/`.
    pub calendar_url: String,
    /// Basic auth header of the test user.
    pub authorization: String,
    _dir: tempfile::TempDir,
    _process: PeerProcess,
}

/// The user the calendar belongs to; Radicale (auth `none`) takes any password.
pub const USER: &str = "keel";

impl CaldavPeer {
    /// Starts Radicale and creates the calendar `/keel/work/`.
    pub fn start() -> CaldavPeer {
        require_python_module("radicale", "radicale");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.path().join("radicale.conf");
        std::fs::write(
            &config,
            format!(
                "[server]\nhosts = {addr}\n[auth]\ntype = none\n[rights]\ntype = authenticated\n\
                 [storage]\nfilesystem_folder = {}\n[logging]\nlevel = error\n",
                dir.path().join("collections").display()
            ),
        )
        .unwrap();
        let child = Command::new("python3")
            .args(["-m", "radicale", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting python3 -m radicale");
        let mut process = PeerProcess::new("radicale", child);
        wait_for_port(addr, "radicale", &mut process);
        let authorization = format!("Basic {}", base64(&format!("{USER}:any")));
        let path = format!("/{USER}/work/");
        let (status, body) = request(addr, "MKCALENDAR", &path, &[("authorization", &authorization)], b"");
        assert_eq!(status, 201, "MKCALENDAR {path} on radicale: {body}");
        CaldavPeer { addr, calendar_url: format!("http://{addr}{path}"), authorization, _dir: dir, _process: process }
    }

    /// GETs `url` (on this server): status and body.
    pub fn get(&self, url: &str) -> (u16, String) {
        let path = url.strip_prefix(&format!("http://{}", self.addr)).expect("a URL of this server");
        request(self.addr, "GET", path, &[("authorization", &self.authorization)], b"")
    }
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}
