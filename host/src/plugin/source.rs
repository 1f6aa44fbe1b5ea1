//! Where a plugin comes from: a local file, a folder, an `https://` URL or
//! an entry of a plugin index, and how its bytes are fetched.
//!
//! Threat: bytes that are not the ones the operator (or the index they
//! chose) pinned: a compromised mirror, a man in the middle, a truncated or
//! corrupted download, a server that answers forever or without end. Every
//! download is capped in size ([`MAX_PLUGIN_BYTES`]) and time, and its
//! sha256 is compared with the pin before anything else looks at the bytes;
//! a URL without a pin is refused. Plain `http://` is only accepted for
//! loopback hosts (tests, a local mirror); redirects must stay on `https`.
//! Not stopped here: a pin that is itself wrong because the index was
//! compromised; publisher signatures ([`super::signing`]) cover that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::index::{IndexEntry, PluginIndex};

/// The largest plugin file keel downloads or reads.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// The largest index or signature file keel downloads or reads.
pub const MAX_SMALL_FILE_BYTES: u64 = 4 << 20;
/// How long one download may take unless `--timeout-seconds` says otherwise.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// The file a plugin folder must hold.
pub const FOLDER_COMPONENT: &str = "plugin.wasm";
/// The manifest a plugin folder may hold (else the component's embedded one).
pub const FOLDER_MANIFEST: &str = "plugin.toml";
/// Redirects followed per download.
const MAX_REDIRECTS: usize = 5;

/// Why a plugin (or its index or signature) could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is a folder without {FOLDER_COMPONENT}: a plugin folder holds {FOLDER_COMPONENT} (and optionally {FOLDER_MANIFEST} and {FOLDER_COMPONENT}.sig)"
    )]
    EmptyFolder { path: PathBuf },
    #[error(
        "{url}: a download must be pinned: pass --sha256 HEX (the sha256 the publisher announced), or install through an index"
    )]
    Unpinned { url: String },
    #[error("{url}: only https:// URLs are accepted (plain http only for loopback addresses)")]
    Scheme { url: String },
    #[error("{url}: the server answered {status}: check the URL{hint}")]
    Status { url: String, status: String, hint: String },
    #[error(
        "{url}: no complete answer within {seconds} s: the server is slow or unreachable; try again later or raise --timeout-seconds"
    )]
    Timeout { url: String, seconds: u64 },
    #[error(
        "{url}: larger than the limit of {limit} bytes for this kind of file: it is not a keel plugin, or the server misbehaves"
    )]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: cannot download: {detail}")]
    Network { url: String, detail: String },
    #[error(
        "{origin}: sha256 is {actual}, but {pinned_by} pins {expected}: the file was changed or corrupted; do not install it, and tell the publisher"
    )]
    HashMismatch { origin: String, actual: String, expected: String, pinned_by: String },
    #[error("{0}")]
    Bad(String),
}

/// What `keel install` was pointed at.
#[derive(Debug, Clone)]
pub enum Source {
    /// A single plugin file.
    File(PathBuf),
    /// A folder holding [`FOLDER_COMPONENT`].
    Folder(PathBuf),
    Url(String),
    /// `NAME[@VERSION]` in the index at `index` (a URL or a path).
    Index {
        index: String,
        name: String,
        version: Option<String>,
    },
}

impl Source {
    /// `target` is a path or URL; with `index`, it is `NAME[@VERSION]`.
    pub fn parse(target: &str, index: Option<&str>) -> Source {
        if let Some(index) = index {
            let (name, version) = match target.split_once('@') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (target.to_owned(), None),
            };
            return Source::Index { index: index.to_owned(), name, version };
        }
        if is_url(target) {
            return Source::Url(target.to_owned());
        }
        let path = PathBuf::from(target);
        if path.is_dir() { Source::Folder(path) } else { Source::File(path) }
    }
}

/// True for `http://` and `https://` addresses.
pub fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// A fetched plugin whose sha256 matched its pin (when it had one).
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// Where it came from, for messages and the audit log.
    pub origin: String,
    /// A path naming the file in install-check messages.
    pub label: PathBuf,
    /// A manifest beside the component (a folder's plugin.toml).
    pub manifest: Option<(String, PathBuf)>,
    /// The detached signature, if one was found, with where it came from.
    pub signature: Option<(Vec<u8>, String)>,
    /// Where the signature was looked for, when none was found.
    pub signature_tried: String,
    /// The publisher key an index names for this plugin.
    pub publisher_key: Option<String>,
    /// The index entry, when installed from an index.
    pub entry: Option<IndexEntry>,
}

/// Fetches plugins, indexes and signatures with one HTTP client.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Result<Fetcher, FetchError> {
        let tls = crate::tls::client_config().map_err(FetchError::Bad)?;
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if allowed_url(attempt.url()) {
                attempt.follow()
            } else {
                let refused = format!("a redirect to {} (not https)", attempt.url());
                attempt.error(refused)
            }
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(redirects)
            .connect_timeout(timeout)
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher { client, timeout })
    }

    /// Fetches the plugin `source` names; `pin` is `--sha256` (required for
    /// a URL); `signature` is `--signature` (a path or URL).
    pub async fn fetch(
        &self,
        source: &Source,
        pin: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let pin = pin.map(normalize_pin).transpose()?;
        let mut fetched = match source {
            Source::File(path) => {
                let bytes = read_capped(path, MAX_PLUGIN_BYTES)?;
                let sig_path = sig_path_for(path);
                let mut f = self.local(bytes, path, pin.as_deref(), "--sha256")?;
                f.signature = read_optional(&sig_path)?.map(|b| (b, sig_path.display().to_string()));
                f.signature_tried = sig_path.display().to_string();
                f
            }
            Source::Folder(dir) => {
                let component = dir.join(FOLDER_COMPONENT);
                if !component.is_file() {
                    return Err(FetchError::EmptyFolder { path: dir.clone() });
                }
                let bytes = read_capped(&component, MAX_PLUGIN_BYTES)?;
                let mut f = self.local(bytes, &component, pin.as_deref(), "--sha256")?;
                let manifest_path = dir.join(FOLDER_MANIFEST);
                if let Some(text) = read_optional(&manifest_path)? {
                    let text = String::from_utf8(text)
                        .map_err(|_| FetchError::Bad(format!("{} is not UTF-8 text", manifest_path.display())))?;
                    f.manifest = Some((text, manifest_path));
                }
                let sig_path = sig_path_for(&component);
                f.signature = read_optional(&sig_path)?.map(|b| (b, sig_path.display().to_string()));
                f.signature_tried = sig_path.display().to_string();
                f
            }
            Source::Url(url) => {
                let Some(pin) = pin.as_deref() else {
                    return Err(FetchError::Unpinned { url: url.clone() });
                };
                let mut f = self.remote(url, pin, "--sha256", "").await?;
                let sig_url = format!("{url}.{}", super::signing::SIGNATURE_EXTENSION);
                f.signature = self.get_optional(&sig_url).await?.map(|b| (b, sig_url.clone()));
                f.signature_tried = sig_url;
                f
            }
            Source::Index { index, name, version } => {
                let (text, base) = self.read_index(index).await?;
                let parsed = PluginIndex::parse(&text, index).map_err(FetchError::Bad)?;
                let entry = parsed.find(name, version.as_deref(), index).map_err(FetchError::Bad)?.clone();
                if let Some(pin) = &pin
                    && !pin.eq_ignore_ascii_case(&entry.sha256)
                {
                    return Err(FetchError::Bad(format!(
                        "--sha256 {pin} disagrees with index {index}, which pins {} {} to {}",
                        entry.name, entry.version, entry.sha256
                    )));
                }
                let location = base.join(&entry.url);
                let pinned_by = format!("index {index}");
                let hint = format!(" (from the entry {}@{} of index {index})", entry.name, entry.version);
                let mut f = match &location {
                    Location::Url(url) => self.remote(url, &entry.sha256, &pinned_by, &hint).await?,
                    Location::Path(path) => {
                        let bytes = read_capped(path, MAX_PLUGIN_BYTES)?;
                        self.local(bytes, path, Some(&entry.sha256), &pinned_by)?
                    }
                };
                let sig_location = match &entry.sig {
                    Some(sig) => base.join(sig),
                    None => location.with_suffix(&format!(".{}", super::signing::SIGNATURE_EXTENSION)),
                };
                f.signature = self.read_optional_location(&sig_location).await?;
                f.signature_tried = sig_location.to_string();
                f.publisher_key = entry.publisher_key.clone();
                f.entry = Some(entry);
                f
            }
        };
        if let Some(sig) = signature {
            let location = if is_url(sig) { Location::Url(sig.to_owned()) } else { Location::Path(sig.into()) };
            fetched.signature = Some(self.read_location(&location, MAX_SMALL_FILE_BYTES).await?);
            fetched.signature_tried = sig.to_owned();
        }
        Ok(fetched)
    }

    fn local(&self, bytes: Vec<u8>, path: &Path, pin: Option<&str>, pinned_by: &str) -> Result<Fetched, FetchError> {
        let origin = path.display().to_string();
        let sha256 = verify_pin(&bytes, &origin, pin, pinned_by)?;
        Ok(Fetched {
            bytes,
            sha256,
            origin,
            label: path.into(),
            manifest: None,
            signature: None,
            signature_tried: String::new(),
            publisher_key: None,
            entry: None,
        })
    }

    async fn remote(&self, url: &str, pin: &str, pinned_by: &str, hint: &str) -> Result<Fetched, FetchError> {
        let bytes = self.get(url, MAX_PLUGIN_BYTES, hint).await?;
        let sha256 = verify_pin(&bytes, url, Some(pin), pinned_by)?;
        Ok(Fetched {
            bytes,
            sha256,
            origin: url.to_owned(),
            label: PathBuf::from(url),
            manifest: None,
            signature: None,
            signature_tried: String::new(),
            publisher_key: None,
            entry: None,
        })
    }

    async fn read_index(&self, index: &str) -> Result<(String, Base), FetchError> {
        let (bytes, base) = if is_url(index) {
            (self.get(index, MAX_SMALL_FILE_BYTES, "").await?, Base::Url(index.to_owned()))
        } else {
            let path = PathBuf::from(index);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (read_capped(&path, MAX_SMALL_FILE_BYTES)?, Base::Dir(dir))
        };
        let text = String::from_utf8(bytes).map_err(|_| FetchError::Bad(format!("index {index} is not UTF-8 JSON")))?;
        Ok((text, base))
    }

    async fn read_location(&self, location: &Location, limit: u64) -> Result<(Vec<u8>, String), FetchError> {
        match location {
            Location::Url(url) => Ok((self.get(url, limit, "").await?, url.clone())),
            Location::Path(path) => Ok((read_capped(path, limit)?, path.display().to_string())),
        }
    }

    async fn read_optional_location(&self, location: &Location) -> Result<Option<(Vec<u8>, String)>, FetchError> {
        match location {
            Location::Url(url) => Ok(self.get_optional(url).await?.map(|b| (b, url.clone()))),
            Location::Path(path) => Ok(read_optional(path)?.map(|b| (b, path.display().to_string()))),
        }
    }

    /// A small file that may be missing (404 or 410): a signature.
    async fn get_optional(&self, url: &str) -> Result<Option<Vec<u8>>, FetchError> {
        match self.get(url, MAX_SMALL_FILE_BYTES, "").await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(FetchError::Status { status, .. }) if status.starts_with("404") || status.starts_with("410") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Downloads `url` whole, at most `limit` bytes, within the timeout.
    async fn get(&self, url: &str, limit: u64, hint: &str) -> Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::Bad(format!("{url} is not a valid URL: {e}")))?;
        if !allowed_url(&parsed) {
            return Err(FetchError::Scheme { url: url.to_owned() });
        }
        let seconds = self.timeout.as_secs().max(1);
        let work = async {
            let mut response = self.client.get(parsed).send().await.map_err(|e| network(url, &e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status: status.to_string(),
                    hint: hint.to_owned(),
                });
            }
            if response.content_length().is_some_and(|n| n > limit) {
                return Err(FetchError::TooLarge { url: url.to_owned(), limit });
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| network(url, &e))? {
                if bytes.len() as u64 + chunk.len() as u64 > limit {
                    return Err(FetchError::TooLarge { url: url.to_owned(), limit });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout { url: url.to_owned(), seconds }),
        }
    }
}

fn network(url: &str, e: &reqwest::Error) -> FetchError {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    FetchError::Network { url: url.to_owned(), detail }
}

/// `https`, or `http` to a loopback address.
fn allowed_url(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(|host| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Lowercase hex of 64 digits, or an error naming the flag.
fn normalize_pin(pin: &str) -> Result<String, FetchError> {
    let pin = pin.trim().trim_start_matches("sha256:").to_ascii_lowercase();
    if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FetchError::Bad(format!("--sha256 {pin:?} is not a sha256: expected 64 hex digits")));
    }
    Ok(pin)
}

/// Hashes `bytes` and compares with `pin`; returns the sha256.
pub fn verify_pin(bytes: &[u8], origin: &str, pin: Option<&str>, pinned_by: &str) -> Result<String, FetchError> {
    let actual = crate::runtime::sha256_hex(bytes);
    if let Some(expected) = pin
        && !expected.eq_ignore_ascii_case(&actual)
    {
        return Err(FetchError::HashMismatch {
            origin: origin.to_owned(),
            actual,
            expected: expected.to_ascii_lowercase(),
            pinned_by: pinned_by.to_owned(),
        });
    }
    Ok(actual)
}

/// `PLUGIN.sig` beside `PLUGIN`.
pub fn sig_path_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(super::signing::SIGNATURE_EXTENSION);
    path.with_file_name(name)
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, FetchError> {
    let meta = std::fs::metadata(path).map_err(|source| FetchError::Read { path: path.into(), source })?;
    if meta.len() > limit {
        return Err(FetchError::TooLarge { url: path.display().to_string(), limit });
    }
    std::fs::read(path).map_err(|source| FetchError::Read { path: path.into(), source })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FetchError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_capped(path, MAX_SMALL_FILE_BYTES).map(Some),
    }
}

/// What relative locations in an index are relative to.
#[derive(Debug, Clone)]
enum Base {
    Url(String),
    Dir(PathBuf),
}

/// A file named by an index: a URL or a local path.
#[derive(Debug, Clone)]
enum Location {
    Url(String),
    Path(PathBuf),
}

impl Base {
    fn join(&self, reference: &str) -> Location {
        if is_url(reference) {
            return Location::Url(reference.to_owned());
        }
        match self {
            Base::Url(base) => match reqwest::Url::parse(base).and_then(|b| b.join(reference)) {
                Ok(url) => Location::Url(url.to_string()),
                Err(_) => Location::Url(reference.to_owned()),
            },
            Base::Dir(dir) => Location::Path(dir.join(reference)),
        }
    }
}

impl Location {
    fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Url(u) => Location::Url(format!("{u}{suffix}")),
            Location::Path(p) => {
                let mut s = p.clone().into_os_string();
                s.push(suffix);
                Location::Path(s.into())
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Url(u) => f.write_str(u),
            Location::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flipped_bit_fails_the_pin() {
        let bytes = b"\0asm plugin".to_vec();
        let pin = crate::runtime::sha256_hex(&bytes);
        assert!(verify_pin(&bytes, "f", Some(&pin), "--sha256").is_ok());
        let mut tampered = bytes.clone();
        tampered[5] ^= 1;
        let err = verify_pin(&tampered, "f", Some(&pin), "--sha256").unwrap_err();
        assert!(err.to_string().contains("do not install it"), "{err}");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let ok = |u: &str| allowed_url(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://plugins.example/x.wasm"));
        assert!(ok("http://127.0.0.1:8080/x.wasm"));
        assert!(ok("http://[::1]/x.wasm"));
        assert!(!ok("http://plugins.example/x.wasm"));
        assert!(!ok("ftp://127.0.0.1/x.wasm"));
    }

    #[test]
    fn relative_index_locations_resolve() {
        let base = Base::Url("http://127.0.0.1:9/idx/index.json".into());
        assert_eq!(base.join("a.wasm").to_string(), "http://127.0.0.1:9/idx/a.wasm");
        let base = Base::Dir("/srv/idx".into());
        assert_eq!(base.join("a.wasm").to_string(), "/srv/idx/a.wasm");
    }
}
