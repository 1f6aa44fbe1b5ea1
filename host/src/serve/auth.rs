//! Who may talk to `keel serve`.
//!
//! Threat: anything that can reach the port (another user on the machine,
//! a web page in the operator's browser, a DNS-rebinding page pointing a
//! public name at 127.0.0.1) approving actions, lifting the kill switch or
//! starting runs. Every request except the health checks must carry the
//! workspace's bearer token (a 256-bit random value in `serve.token`, mode
//! 0600, created by `keel init`, replaced by `keel token rotate`); the
//! `Host` header must name the address the server listens on (or a name
//! the operator allowed), which defeats DNS rebinding; a request with an
//! `Origin` header must come from that same origin, which defeats
//! cross-site requests. Not stopped: a local user who can read the token
//! file, and anything on the network path when listening beyond loopback
//! without TLS (put a TLS proxy in front).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The token file in a workspace.
pub const TOKEN_FILE: &str = "serve.token";

/// Why the token could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no API token in {path}: create one with `keel token rotate`")]
    Missing { path: PathBuf },
    #[error("cannot access the API token {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Writes a new random token to `workspace/serve.token` (readable by the
/// owner only) and returns it.
pub fn rotate(workspace: &Path) -> Result<String, TokenError> {
    use rand::Rng;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("keel_{}", hex::encode(bytes));
    let path = workspace.join(TOKEN_FILE);
    let io = |source| TokenError::Io { path: path.clone(), source };
    write_private(&path, &token).map_err(io)?;
    Ok(token)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("token.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// The workspace's token.
pub fn read(workspace: &Path) -> Result<String, TokenError> {
    let path = workspace.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        Ok(_) => Err(TokenError::Missing { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TokenError::Missing { path }),
        Err(source) => Err(TokenError::Io { path, source }),
    }
}

/// Checks requests against the token and the expected host.
#[derive(Clone)]
pub struct Guard {
    /// SHA-256 of the token: compared in constant time, never logged.
    token_hash: [u8; 32],
    /// `Host` values accepted (`127.0.0.1:7878`, `localhost:7878`, ...).
    hosts: Vec<String>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or wrong bearer token.
    Token,
    /// 403: a `Host` or `Origin` the server does not answer to.
    Host(String),
    Origin(String),
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Token => {
                "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token in the workspace's serve.token".into()
            }
            Refusal::Host(h) => format!("this server does not answer to Host `{h}` (DNS rebinding protection)"),
            Refusal::Origin(o) => format!("requests from origin `{o}` are refused (cross-site protection)"),
        }
    }
}

impl Guard {
    /// A guard for `token`, answering to `addr` as IP and, on loopback, as
    /// `localhost`, plus `extra_hosts`.
    pub fn new(token: &str, addr: std::net::SocketAddr, extra_hosts: &[String]) -> Guard {
        let mut hosts = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{}", addr.port()));
        }
        hosts.extend(extra_hosts.iter().cloned());
        Guard { token_hash: Sha256::digest(token.as_bytes()).into(), hosts }
    }

    /// Checks `Host` and `Origin` (every request).
    pub fn check_origin(&self, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
        let host = host.unwrap_or_default();
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::Host(host.to_owned()));
        }
        if let Some(origin) = origin {
            let allowed = self.hosts.iter().any(|h| {
                origin.eq_ignore_ascii_case(&format!("http://{h}"))
                    || origin.eq_ignore_ascii_case(&format!("https://{h}"))
            });
            if !allowed {
                return Err(Refusal::Origin(origin.to_owned()));
            }
        }
        Ok(())
    }

    /// Checks the `Authorization` header.
    pub fn check_token(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let given = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
        let hash: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Equal-length hashes, compared without an early exit.
        let same = hash.iter().zip(self.token_hash.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same && !given.is_empty() { Ok(()) } else { Err(Refusal::Token) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hosts_and_origins_are_checked() {
        let addr: std::net::SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let guard = Guard::new("keel_abc", addr, &[]);
        assert!(guard.check_token(Some("Bearer keel_abc")).is_ok());
        assert_eq!(guard.check_token(Some("Bearer keel_abd")), Err(Refusal::Token));
        assert_eq!(guard.check_token(Some("keel_abc")), Err(Refusal::Token));
        assert_eq!(guard.check_token(None), Err(Refusal::Token));
        assert!(guard.check_origin(Some("127.0.0.1:7878"), None).is_ok());
        assert!(guard.check_origin(Some("localhost:7878"), Some("http://localhost:7878")).is_ok());
        assert!(matches!(guard.check_origin(Some("evil.example:7878"), None), Err(Refusal::Host(_))));
        assert!(matches!(
            guard.check_origin(Some("127.0.0.1:7878"), Some("http://evil.example")),
            Err(Refusal::Origin(_))
        ));
    }

    #[test]
    fn a_rotated_token_is_private_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let first = rotate(dir.path()).unwrap();
        let second = rotate(dir.path()).unwrap();
        assert_ne!(first, second);
        assert_eq!(read(dir.path()).unwrap(), second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
