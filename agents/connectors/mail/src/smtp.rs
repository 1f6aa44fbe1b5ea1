//! A minimal SMTP client (RFC 5321): EHLO, optional AUTH PLAIN, MAIL FROM,
//! RCPT TO, DATA with dot-stuffing, QUIT. No STARTTLS: use a local relay
//! or a submission port that the operator trusts on its network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use keel_sdk::Error;
use keel_sdk::encoding::base64;
use keel_sdk::time::UtcDateTime;

/// Longest reply line accepted (RFC 5321 allows 512; some servers send more).
const MAX_REPLY_LINE: usize = 4096;
/// Most continuation lines in one reply.
const MAX_REPLY_LINES: usize = 100;

pub struct Message<'a> {
    pub from: &'a str,
    pub to: &'a [String],
    pub cc: &'a [String],
    pub subject: &'a str,
    pub body: &'a str,
    pub message_id: &'a str,
    pub idempotency_key: &'a str,
    pub date: UtcDateTime,
}

pub struct Envelope<'a> {
    pub from: &'a str,
    pub recipients: &'a [String],
}

/// Refuses addresses that could inject SMTP commands or headers.
pub fn check_address(address: &str) -> Result<(), Error> {
    let ok = address.len() <= 254
        && address.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ','));
    if ok { Ok(()) } else { Err(Error::InvalidInput(format!("{address:?} is not a plain email address"))) }
}

/// A Message-ID carrying the idempotency key, so the operator can match a
/// delivered message to its outbox entry.
pub fn message_id(key: &str, from: &str) -> String {
    let safe: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || "-._".contains(c) { c } else { '.' }).collect();
    let domain = from.rsplit_once('@').map_or("keel.local", |(_, d)| d);
    format!("<keel.{safe}@{domain}>")
}

/// The message in wire form: CRLF line ends, headers, then the body.
pub fn format_message(m: &Message<'_>) -> String {
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", m.from);
    header("To", &m.to.join(", "));
    if !m.cc.is_empty() {
        header("Cc", &m.cc.join(", "));
    }
    header("Subject", &encode_header_text(m.subject));
    header("Date", &m.date.rfc2822());
    header("Message-ID", m.message_id);
    header("X-Keel-Idempotency-Key", &encode_header_text(m.idempotency_key));
    header("MIME-Version", "1.0");
    header("Content-Type", "text/plain; charset=utf-8");
    header("Content-Transfer-Encoding", "8bit");
    out.push_str("\r\n");
    for line in m.body.replace("\r\n", "\n").split('\n') {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// ASCII text as is; anything else as an RFC 2047 encoded word.
fn encode_header_text(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii() && !c.is_control()) {
        text.to_owned()
    } else {
        format!("=?utf-8?B?{}?=", base64(text.as_bytes()))
    }
}

/// `message` made safe for DATA: lines starting with `.` get another one
/// (RFC 5321 4.5.2), then the terminating `.` line.
fn dot_stuff(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 8);
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// One connection; reads are buffered, writes go straight to the socket.
pub struct SmtpSession {
    conn: BufReader<TcpStream>,
}

/// A reply: code and text lines joined.
struct Reply {
    code: u16,
    text: String,
}

impl SmtpSession {
    /// Connects to `server` (`host:port`), reads the greeting and says EHLO.
    pub fn connect(server: &str, helo: &str) -> Result<SmtpSession, Error> {
        let stream = TcpStream::connect(server)
            .map_err(|e| Error::Unavailable(format!("cannot connect to the SMTP server {server}: {e}")))?;
        let mut session = SmtpSession { conn: BufReader::new(stream) };
        session.expect("greeting", &[220])?;
        session.command(&format!("EHLO {helo}"), &[250])?;
        Ok(session)
    }

    /// AUTH PLAIN (RFC 4616) with `user` and `password`.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), Error> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.write(&format!("AUTH PLAIN {token}\r\n"))?;
        // Never echo the command: it carries the password.
        let reply = self.read_reply()?;
        match reply.code {
            235 => Ok(()),
            c if c >= 500 => Err(Error::Denied(format!("the SMTP server refused the login ({c})"))),
            c => Err(Error::Unavailable(format!("the SMTP server could not log in now ({c})"))),
        }
    }

    /// MAIL FROM, RCPT TO, DATA. Returns the server's final reply text.
    /// Before the final `.` nothing was sent, so failures are errors; after
    /// it the message may have been accepted, so an unreadable reply
    /// panics: the host then reports the outcome as unknown.
    pub fn send(&mut self, envelope: &Envelope<'_>, message: &str, message_id: &str) -> Result<String, Error> {
        self.command(&format!("MAIL FROM:<{}>", envelope.from), &[250])?;
        for rcpt in envelope.recipients {
            self.command(&format!("RCPT TO:<{rcpt}>"), &[250, 251])?;
        }
        self.command("DATA", &[354])?;
        self.write(&dot_stuff(message))?;
        match self.read_reply() {
            Ok(Reply { code: 250, text }) => Ok(format!("250 {text}")),
            Ok(reply) => Err(reply_error("end of DATA", &reply)),
            Err(e) => panic!(
                "the SMTP server did not confirm message {message_id} after DATA ({e:?}); it may have been delivered: check before sending again"
            ),
        }
    }

    /// Says goodbye; the message is already accepted, so errors don't matter.
    pub fn quit(mut self) {
        let _ = self.write("QUIT\r\n");
        let _ = self.read_reply();
    }

    fn command(&mut self, line: &str, ok: &[u16]) -> Result<Reply, Error> {
        self.write(&format!("{line}\r\n"))?;
        let verb = line.split([' ', ':']).next().unwrap_or(line);
        self.expect(verb, ok)
    }

    fn expect(&mut self, what: &str, ok: &[u16]) -> Result<Reply, Error> {
        let reply = self.read_reply()?;
        if ok.contains(&reply.code) { Ok(reply) } else { Err(reply_error(what, &reply)) }
    }

    fn write(&mut self, text: &str) -> Result<(), Error> {
        let socket = self.conn.get_mut();
        socket
            .write_all(text.as_bytes())
            .and_then(|()| socket.flush())
            .map_err(|e| Error::Unavailable(format!("writing to the SMTP server: {e}")))
    }

    fn read_reply(&mut self) -> Result<Reply, Error> {
        let mut text = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = String::new();
            let n = (&mut self.conn)
                .take(MAX_REPLY_LINE as u64)
                .read_line(&mut line)
                .map_err(|e| Error::Unavailable(format!("reading from the SMTP server: {e}")))?;
            if n == 0 {
                return Err(Error::Unavailable("the SMTP server closed the connection".into()));
            }
            let line = line.trim_end();
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let Some(code) = code else {
                return Err(Error::Unavailable(format!("the SMTP server sent a malformed reply: {line:?}")));
            };
            text.push(line.get(4..).unwrap_or_default().to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, text: text.join(" ") });
            }
        }
        Err(Error::Unavailable("the SMTP server sent an endless reply".into()))
    }
}

/// 4xx: transient, a retry may succeed; 5xx: permanent.
fn reply_error(what: &str, reply: &Reply) -> Error {
    let detail = format!("the SMTP server answered {what} with {} {}", reply.code, reply.text);
    if (400..500).contains(&reply.code) { Error::Unavailable(detail) } else { Error::InvalidInput(detail) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(dot_stuff("a\r\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(".\r\n"), "..\r\n.\r\n");
    }

    #[test]
    fn addresses_cannot_inject() {
        assert!(check_address("ada@example.com").is_ok());
        for bad in ["a@b>\r\nRCPT TO:<x@y", "no-at", "a b@c", "a@b@c", "<a@b>"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn message_id_carries_the_key() {
        assert_eq!(message_id("run-1/step/0", "ops@acme.test"), "<keel.run-1.step.0@acme.test>");
    }
}
