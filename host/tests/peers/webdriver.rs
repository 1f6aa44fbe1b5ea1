//! A real browser for the dashboard tests: Debian's headless Chromium
//! driven by chromedriver on a free loopback port, spoken to in W3C
//! WebDriver (plain HTTP/JSON). The browser has a fresh profile and stops
//! when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::PeerProcess;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How to get both (what tests/run.sh does).
pub const INSTALL: &str = "sudo apt-get install chromium chromium-driver (tests/run.sh does it)";

/// The key W3C WebDriver names elements by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags that run Chromium headless as root in a container, with nothing
/// fetched in the background.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--lang=en-US",
    "--window-size=1360,1500",
];

/// An element found on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// One Chromium session behind its own chromedriver.
pub struct Browser {
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
    _driver: PeerProcess,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver is killed after (field drop).
        let _ = send(self.addr, "DELETE", &format!("/session/{}", self.session), None);
    }
}

/// Fails the test with the fix when the browser or its driver is missing.
pub fn require_chromium() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(Path::new(path).exists(), "{path} is missing: {INSTALL}");
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub fn start() -> Browser {
        require_chromium();
        let port = super::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}; {INSTALL}"));
        let mut driver = PeerProcess::new("chromedriver", child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        super::wait_for_port(addr, "chromedriver", &mut driver);
        let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": 20_000, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = send(addr, "POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("chromedriver could not start {CHROMIUM}: {e}"));
        let session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {created}")).to_owned();
        Browser { addr, session, _profile: profile, _driver: driver }
    }

    /// One command of this session: its `value`, or the driver's error.
    pub fn try_command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        send(self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    /// One command that must succeed.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_command(method, path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching the CSS `selector`, if any.
    pub fn find(&self, selector: &str) -> Option<Element> {
        match self.try_command("POST", "/element", Some(&json!({"using": "css selector", "value": selector}))) {
            Ok(found) => Some(Element(
                found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element reference in {found}")).to_owned(),
            )),
            Err(e) if e.contains("no such element") => None,
            Err(e) => panic!("finding `{selector}`: {e}"),
        }
    }

    /// The first element matching `selector`, which must exist.
    pub fn get(&self, selector: &str) -> Element {
        self.find(selector).unwrap_or_else(|| panic!("no element `{selector}` on the page:\n{}", self.page_text()))
    }

    pub fn click(&self, element: &Element) {
        self.command("POST", &format!("/element/{}/click", element.0), Some(&json!({})));
    }

    /// Types `text` into `element`.
    pub fn type_text(&self, element: &Element, text: &str) {
        self.command("POST", &format!("/element/{}/value", element.0), Some(&json!({ "text": text })));
    }

    pub fn clear(&self, element: &Element) {
        self.command("POST", &format!("/element/{}/clear", element.0), Some(&json!({})));
    }

    /// The rendered text of `element`.
    pub fn text(&self, element: &Element) -> String {
        self.command("GET", &format!("/element/{}/text", element.0), None).as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns what it returns.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(&json!({ "script": script, "args": args })))
    }

    /// Everything the page shows as text.
    pub fn page_text(&self) -> String {
        match self.try_command(
            "POST",
            "/execute/sync",
            Some(&json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
        ) {
            Ok(v) => v.as_str().unwrap_or_default().to_owned(),
            Err(e) => format!("(the page text could not be read: {e})"),
        }
    }

    /// Polls `check` every 100 ms until it gives a value; after `timeout`
    /// fails the test saying what was awaited and what the page shows.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Browser) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!("waited {} s for {what}; the page shows:\n{}", timeout.as_secs(), self.page_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport, written to `path` (folders created).
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", "/screenshot", None);
        let png = decode_base64(encoded.as_str().expect("a base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Longest a WebDriver command may take (a page load, a script).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One WebDriver request: the answer's `value`, or its error and message.
/// chromedriver says `Connection: close` but may keep the socket open, so
/// the body is read by its `Content-Length`.
fn send(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let (status, text) = exchange(addr, method, path, &body)
        .map_err(|e| format!("{method} {path}: no answer from chromedriver within {COMMAND_TIMEOUT:?} ({e})"))?;
    let answer: Value = serde_json::from_str(&text).map_err(|e| format!("HTTP {status}, not JSON ({e}): {text}"))?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        return Ok(value);
    }
    let message = value["message"].as_str().unwrap_or(&text);
    Err(format!("HTTP {status} {}: {message}", value["error"].as_str().unwrap_or("?")))
}

fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut bytes = Vec::new();
    match length {
        Some(n) => {
            bytes.resize(n, 0);
            reader.read_exact(&mut bytes)?;
        }
        None => {
            reader.read_to_end(&mut bytes)?;
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Standard base64 (with padding, whitespace ignored).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut bits = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            bits |= value(*c) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
