//! A small blocking HTTP client over `wasi:http`, for connectors.
//!
//! The host decides where a request may go: only to the connector's granted
//! `host:port` pairs, never to an internal address through a name (see
//! keel's docs/connectors.md). A refused request fails with
//! [`HttpError::Refused`]. Redirects are not followed unless asked for with
//! [`Request::follow_redirects`]; each hop is then a new request the host
//! checks again.
//!
//! ```no_run
//! # fn demo() -> Result<(), keel_sdk::Error> {
//! use keel_sdk::http::Request;
//!
//! let response = Request::post("https://api.example.com/v1/charges")
//!     .header("authorization", "Bearer ...")
//!     .form(&[("amount", "1200"), ("currency", "eur")])
//!     .send()?;
//! let charge: serde_json::Value = response.json()?;
//! # Ok(()) }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::Error;

/// Largest response body read into memory.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Bytes written to the request body stream at once.
const WRITE_CHUNK: usize = 4096;

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_redirects: u8,
}

/// A response, body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port]/path`.
    InvalidUrl { url: String, why: String },
    /// A header the host or HTTP forbids (`host`, `connection`, ...) or a
    /// malformed one.
    InvalidHeader { name: String },
    /// The host refused the destination (not granted, or an internal
    /// address); the host's log says which grant is missing.
    Refused { url: String, code: String },
    /// Connecting, sending or receiving failed.
    Failed { url: String, detail: String },
    /// More redirects than allowed.
    TooManyRedirects { url: String },
    /// The response body is over [`MAX_RESPONSE_BYTES`].
    BodyTooLarge { url: String },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl { url, why } => write!(f, "invalid URL {url:?}: {why}"),
            HttpError::InvalidHeader { name } => write!(f, "header `{name}` is forbidden or malformed"),
            HttpError::Refused { url, code } => {
                write!(f, "the host refused the request to {url} ({code}): the destination is not granted")
            }
            HttpError::Failed { url, detail } => write!(f, "request to {url} failed: {detail}"),
            HttpError::TooManyRedirects { url } => write!(f, "too many redirects, last to {url}"),
            HttpError::BodyTooLarge { url } => {
                write!(f, "the response from {url} is over {MAX_RESPONSE_BYTES} bytes")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// Refusals are `denied`, malformed requests `invalid-input`, transport
/// failures `unavailable` (a retry may succeed).
impl From<HttpError> for Error {
    fn from(e: HttpError) -> Error {
        match e {
            HttpError::Refused { .. } => Error::Denied(e.to_string()),
            HttpError::InvalidUrl { .. } | HttpError::InvalidHeader { .. } => Error::InvalidInput(e.to_string()),
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

impl Request {
    /// A request with any method (`GET`, `POST`, `PROPFIND`, ...).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            max_redirects: 0,
        }
    }

    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }

    pub fn put(url: &str) -> Request {
        Request::new("PUT", url)
    }

    pub fn delete(url: &str) -> Request {
        Request::new("DELETE", url)
    }

    /// Adds a header (names are case-insensitive).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body and its `content-type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Request {
        self.headers.retain(|(n, _)| n != "content-type");
        self.body = body.into();
        self.header("content-type", content_type)
    }

    /// Sets a JSON body.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Request, Error> {
        let body =
            serde_json::to_vec(value).map_err(|e| Error::InvalidInput(format!("request body is not JSON: {e}")))?;
        Ok(self.body("application/json", body))
    }

    /// Sets an `application/x-www-form-urlencoded` body.
    pub fn form(self, fields: &[(&str, &str)]) -> Request {
        let encoded: Vec<String> =
            fields.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect();
        self.body("application/x-www-form-urlencoded", encoded.join("&"))
    }

    /// Follows up to `max` redirects (301, 302, 303, 307, 308). 303, and
    /// 301/302 after anything but GET or HEAD, continue as a GET without
    /// body, as browsers do.
    pub fn follow_redirects(mut self, max: u8) -> Request {
        self.max_redirects = max;
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(mut self) -> Result<Response, HttpError> {
        let mut hops = 0;
        loop {
            let response = send_once(&self)?;
            let location = response.header("location").map(str::to_owned);
            let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
            let (true, Some(location)) = (redirect, location) else { return Ok(response) };
            if hops >= self.max_redirects {
                if self.max_redirects == 0 {
                    return Ok(response);
                }
                return Err(HttpError::TooManyRedirects { url: location });
            }
            hops += 1;
            self.url = resolve_location(&self.url, &location)?;
            let keep_method = matches!(response.status, 307 | 308) || matches!(self.method.as_str(), "GET" | "HEAD");
            if !keep_method {
                self.method = "GET".into();
                self.body.clear();
                self.headers.retain(|(n, _)| n != "content-type");
            }
        }
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; `unavailable` if it is not the expected JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Unavailable(format!("response (status {}) is not the expected JSON: {e}", self.status)))
    }
}

/// The parts of an absolute `http(s)` URL.
#[derive(Debug, PartialEq, Eq)]
struct UrlParts {
    https: bool,
    authority: String,
    path_and_query: String,
}

fn split_url(url: &str) -> Result<UrlParts, HttpError> {
    let invalid = |why: &str| HttpError::InvalidUrl { url: url.to_owned(), why: why.to_owned() };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme; use http:// or https://"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(invalid("only http and https are supported")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    // `user@host` reads as one host and goes to another: refuse it.
    if authority.contains('@') {
        return Err(invalid("user info in URLs is not supported; send credentials in a header"));
    }
    let path_and_query = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok(UrlParts { https, authority: authority.to_owned(), path_and_query })
}

/// The absolute URL a `Location` header points to from `base`.
fn resolve_location(base: &str, location: &str) -> Result<String, HttpError> {
    if location.contains("://") {
        split_url(location)?;
        return Ok(location.to_owned());
    }
    let parts = split_url(base)?;
    let scheme = if parts.https { "https" } else { "http" };
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{}{location}", parts.authority));
    }
    let dir = parts.path_and_query.split('?').next().unwrap_or("/");
    let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
    Ok(format!("{scheme}://{}{dir}{location}", parts.authority))
}

fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn send_once(request: &Request) -> Result<Response, HttpError> {
    let url = request.url.clone();
    let parts = split_url(&url)?;
    let failed = |detail: String| HttpError::Failed { url: url.clone(), detail };

    let mut entries: Vec<(String, Vec<u8>)> =
        request.headers.iter().map(|(n, v)| (n.clone(), v.as_bytes().to_vec())).collect();
    if !request.body.is_empty() || matches!(request.method.as_str(), "POST" | "PUT" | "PATCH") {
        entries.push(("content-length".into(), request.body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&entries).map_err(|_| {
        let name = request.headers.iter().map(|(n, _)| n.as_str()).find(|n| Fields::new().append(n, b"x").is_err());
        HttpError::InvalidHeader { name: name.unwrap_or("?").to_owned() }
    })?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |why: &str| HttpError::InvalidUrl { url: url.clone(), why: why.to_owned() };
    outgoing.set_method(&method).map_err(|()| invalid("invalid method"))?;
    outgoing
        .set_scheme(Some(if parts.https { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|()| invalid("scheme"))?;
    outgoing.set_authority(Some(&parts.authority)).map_err(|()| invalid("invalid host or port"))?;
    outgoing.set_path_with_query(Some(&parts.path_and_query)).map_err(|()| invalid("invalid path"))?;

    let body = outgoing.body().map_err(|()| failed("no request body".into()))?;
    // Send first, then stream the body: the host reads it as it goes out.
    let pending = outgoing_handler::handle(outgoing, None).map_err(|code| error_code(&url, code))?;
    {
        let stream = body.write().map_err(|()| failed("no request body stream".into()))?;
        for chunk in request.body.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|e| failed(stream_error(e)))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|code| error_code(&url, code))?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(error_code(&url, code)),
        Some(Err(())) | None => return Err(failed("the response was already taken".into())),
    };
    read_response(&url, response)
}

fn read_response(url: &str, response: IncomingResponse) -> Result<Response, HttpError> {
    let failed = |detail: String| HttpError::Failed { url: url.to_owned(), detail };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| failed("no response body".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| failed("no response body stream".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_RESPONSE_BYTES {
                        return Err(HttpError::BodyTooLarge { url: url.to_owned() });
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(failed(stream_error(e))),
            }
        }
    }
    Ok(Response { status, headers, body })
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

fn error_code(url: &str, code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            HttpError::Refused { url: url.to_owned(), code: format!("{code:?}") }
        }
        other => HttpError::Failed { url: url.to_owned(), detail: format!("{other:?}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_parts() {
        let p = split_url("https://api.example.com:8443/v1/x?y=1#frag").unwrap();
        assert_eq!(
            p,
            UrlParts { https: true, authority: "api.example.com:8443".into(), path_and_query: "/v1/x?y=1".into() }
        );
        assert_eq!(split_url("http://h?q").unwrap().path_and_query, "/?q");
        assert_eq!(split_url("http://[::1]:80").unwrap().authority, "[::1]:80");
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("http://granted.example@evil.example/").is_err());
        assert!(split_url("/relative").is_err());
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "http://127.0.0.1:8080/hooks/a?x=1";
        assert_eq!(resolve_location(base, "/b").unwrap(), "http://127.0.0.1:8080/b");
        assert_eq!(resolve_location(base, "c").unwrap(), "http://127.0.0.1:8080/hooks/c");
        assert_eq!(resolve_location(base, "//other:1/d").unwrap(), "http://other:1/d");
        assert_eq!(resolve_location(base, "https://x/y").unwrap(), "https://x/y");
    }

    #[test]
    fn form_fields_are_encoded() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
