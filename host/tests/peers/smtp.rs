//! An SMTP server on loopback: aiosmtpd via `tests/peers/smtp_sink.py`,
//! recording every message it accepts.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{PeerProcess, require_python_module, scripts_dir};

pub struct SmtpPeer {
    pub port: u16,
    out: tempfile::TempDir,
    _process: PeerProcess,
}

/// One accepted message.
#[derive(Debug)]
pub struct ReceivedMail {
    /// The DATA as received, dot-unstuffed.
    pub data: String,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The AUTH login, if the client logged in.
    pub login: Option<String>,
}

impl ReceivedMail {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let prefix = format!("{}:", name.to_ascii_lowercase());
        head.split("\r\n")
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
    }

    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

impl SmtpPeer {
    /// Starts the server; with `login` (`user:password`) it requires AUTH.
    pub fn start(login: Option<&str>) -> SmtpPeer {
        require_python_module("aiosmtpd", "aiosmtpd");
        let out = tempfile::tempdir().unwrap();
        let mut command = Command::new("python3");
        command.arg(scripts_dir().join("smtp_sink.py")).arg(out.path());
        command.args(login);
        let child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("starting python3");
        let mut process = PeerProcess::new("aiosmtpd", child);
        let stdout = process.child().stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("smtp_sink.py did not start: {line:?} (its stderr is above)"));
        SmtpPeer { port, out, _process: process }
    }

    /// The messages received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut mails = Vec::new();
        for n in 1.. {
            let base: PathBuf = self.out.path().join(n.to_string());
            let Ok(data) = std::fs::read_to_string(base.with_extension("eml")) else { break };
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(base.with_extension("json")).unwrap()).unwrap();
            mails.push(ReceivedMail {
                data,
                mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
                rcpt_tos: meta["rcpt_tos"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect(),
                login: meta["login"].as_str().map(str::to_owned),
            });
        }
        mails
    }

    /// Waits (briefly) for `count` messages.
    pub fn wait_for(&self, count: usize) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mails = self.received();
            if mails.len() >= count || Instant::now() > deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
