//! Network egress of connectors: which hosts and ports a connector may
//! reach, decided by the host for every connection.
//!
//! **Threat stopped.** A connector is third-party code, and even a trusted
//! one handles hostile data (a webhook URL, a redirect `Location`). Either
//! could use keel's position on the network to reach what the operator did
//! not grant (SSRF): the host's own loopback services, the LAN, a cloud
//! metadata endpoint (`169.254.169.254`), or a granted name whose DNS
//! answer is switched to an internal address after the check (DNS
//! rebinding). Lookups of arbitrary names would also leak data through DNS.
//!
//! **How.**
//! * A connection goes only to a granted `host:port` (the plugin's
//!   `outbound` grants).
//! * A granted *name* is resolved by the host, and every address it
//!   resolves to must be a public unicast address: loopback, private
//!   (RFC 1918, `fc00::/7`), link-local, unspecified, multicast, CGNAT
//!   (`100.64/10`), other reserved ranges, and the IPv4-mapped, -compatible
//!   and NAT64 forms of these are refused, for the whole name. Only a grant
//!   that is itself an IP literal (`127.0.0.1:2525`) reaches such an address.
//! * The connection goes to an address that passed the check; nothing
//!   resolves the name again in between, so there is no window for DNS
//!   rebinding.
//! * `wasi:http` (see [`http`]): every outgoing request is checked on its
//!   own. `wasi:http` never follows redirects, so each hop a guest follows
//!   is a new, checked request.
//! * `wasi:sockets` (see [`sockets`]): granted names are resolved when the
//!   call starts; the guest's lookups are answered from that result (one
//!   checked address per name) and a lookup of any other name is refused
//!   without a DNS query. A TCP connect must go to a checked address and a
//!   granted port. UDP, listening and accepting are refused.
//!
//! **Not stopped.** A granted host that is hostile or forwards traffic on;
//! data sent to a granted host; a granted name whose owner points it at
//! another *public* address; timing channels. HTTPS certificates are
//! checked against the web PKI roots, so a grant of an internal HTTPS
//! service by IP literal needs a publicly trusted certificate.

pub mod http;
pub mod sockets;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long resolving one granted name may take (a slow resolver must not
/// eat the call's whole time budget silently).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusals kept per call for the error message; more are counted, not kept
/// (a guest looping over refused connects cannot grow host memory).
const MAX_KEPT_REFUSALS: usize = 16;

/// The host part of an `outbound` grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrantHost {
    /// An IP literal: reaches exactly that address, whatever its range.
    Ip(IpAddr),
    /// A DNS name, lowercase, without a trailing dot: reaches the public
    /// addresses it resolves to.
    Name(String),
}

/// One `host:port` a connector may reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressGrant {
    pub host: GrantHost,
    pub port: u16,
}

impl fmt::Display for EgressGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            GrantHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            GrantHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            GrantHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl EgressGrant {
    /// Parses `host:port`, `1.2.3.4:port` or `[v6]:port`.
    pub fn parse(entry: &str) -> Result<EgressGrant, String> {
        let bad =
            |why: &str| format!("outbound grant {entry:?} {why}: write it as `host:port`, e.g. `api.example.com:443`");
        let (host, port) = entry.trim().rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("has an invalid port"))?;
        if port == 0 {
            return Err(bad("has port 0"));
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(EgressGrant { host: GrantHost::Ip(ip.to_canonical()), port });
        }
        let name = normalize_name(host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(bad("has an invalid host name"));
        }
        Ok(EgressGrant { host: GrantHost::Name(name), port })
    }
}

/// Lowercase, without a trailing dot: the form grants and requests compare in.
pub fn normalize_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Why a connection was refused. Its `Display` names the target and what to
/// grant; it never contains request contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRefusal {
    /// What the guest tried to reach, as `host:port` (or a host name alone
    /// for a lookup).
    pub target: String,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// No grant covers the target. `granted` lists the grants in force.
    NotGranted { granted: Vec<String> },
    /// A name lookup (`wasi:sockets`) of a name no grant mentions.
    NameNotGranted,
    /// The granted name resolves to an address of a special-purpose range.
    SpecialAddress { address: IpAddr, range: &'static str, port: u16 },
    /// The granted name could not be resolved.
    Unresolvable { detail: String },
    /// A socket use other than an outgoing TCP connection.
    UseRefused { what: &'static str },
}

impl fmt::Display for EgressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = &self.target;
        match &self.reason {
            RefusalReason::NotGranted { granted } => {
                let granted = if granted.is_empty() { "none".to_owned() } else { granted.join(", ") };
                write!(
                    f,
                    "`{target}` is not granted (granted: {granted}); if the connector should reach it, add \"{target}\" to its `outbound` grants"
                )
            }
            RefusalReason::NameNotGranted => write!(
                f,
                "lookup of `{target}` refused: no `outbound` grant names it; grant \"{target}:PORT\" with the port the connector uses"
            ),
            RefusalReason::SpecialAddress { address, range, port } => {
                let literal = match address {
                    IpAddr::V6(ip) => format!("[{ip}]:{port}"),
                    IpAddr::V4(ip) => format!("{ip}:{port}"),
                };
                write!(
                    f,
                    "`{target}` resolves to {address}, a {range} address, which a granted name may not reach; if a local peer is intended, grant the IP literal \"{literal}\" instead of the name"
                )
            }
            RefusalReason::Unresolvable { detail } => {
                write!(f, "`{target}` could not be resolved ({detail}); check the name and the host's DNS")
            }
            RefusalReason::UseRefused { what } => {
                write!(f, "{what} to `{target}` refused: connectors may only open outgoing TCP connections")
            }
        }
    }
}

/// Refusals of one call, shared by the HTTP and socket paths and read when
/// the call ends.
#[derive(Debug, Clone, Default)]
pub struct RefusalLog(Arc<Mutex<RefusalList>>);

#[derive(Debug, Default)]
struct RefusalList {
    kept: Vec<EgressRefusal>,
    dropped: usize,
}

impl RefusalLog {
    pub fn record(&self, connector: &str, refusal: EgressRefusal) {
        tracing::warn!(target: "keel::connector", connector, target = %refusal.target, "egress refused: {refusal}");
        let mut list = self.0.lock().expect("refusal log poisoned");
        if list.kept.len() < MAX_KEPT_REFUSALS && !list.kept.contains(&refusal) {
            list.kept.push(refusal);
        } else {
            list.dropped += 1;
        }
    }

    /// The first refusal of the call, if any: the one that explains the rest.
    pub fn first(&self) -> Option<EgressRefusal> {
        self.0.lock().expect("refusal log poisoned").kept.first().cloned()
    }
}

/// The egress grants of one connector for one call.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    connector: String,
    grants: BTreeSet<EgressGrant>,
    refusals: RefusalLog,
}

impl EgressPolicy {
    /// Parses the `outbound` grants; a malformed entry is named in the error.
    pub fn new(connector: &str, outbound: &[String]) -> Result<EgressPolicy, String> {
        let grants = outbound.iter().map(|e| EgressGrant::parse(e)).collect::<Result<_, _>>()?;
        Ok(EgressPolicy { connector: connector.to_owned(), grants, refusals: RefusalLog::default() })
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    pub fn grants(&self) -> impl Iterator<Item = &EgressGrant> {
        self.grants.iter()
    }

    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    pub fn refuse(&self, refusal: EgressRefusal) {
        self.refusals.record(&self.connector, refusal);
    }

    fn not_granted(&self, target: String) -> EgressRefusal {
        let granted = self.grants.iter().map(ToString::to_string).collect();
        EgressRefusal { target, reason: RefusalReason::NotGranted { granted } }
    }

    /// The addresses `host:port` may be reached at, all checked, in the
    /// resolver's order; or why not. `host` is a name or an IP literal
    /// (IPv6 with or without brackets).
    pub async fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressRefusal> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            let grant = EgressGrant { host: GrantHost::Ip(ip), port };
            return if self.grants.contains(&grant) {
                Ok(vec![SocketAddr::new(ip, port)])
            } else {
                Err(self.not_granted(grant.to_string()))
            };
        }
        let name = normalize_name(bare);
        let grant = EgressGrant { host: GrantHost::Name(name.clone()), port };
        if !self.grants.contains(&grant) {
            return Err(self.not_granted(grant.to_string()));
        }
        let ips =
            resolve_public(&name, port).await.map_err(|reason| EgressRefusal { target: grant.to_string(), reason })?;
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }
}

/// Resolves `name` and checks every address; refuses the whole name if any
/// is in a special-purpose range (a name with one internal answer among
/// public ones is an attack or a mistake either way).
pub async fn resolve_public(name: &str, port: u16) -> Result<Vec<IpAddr>, RefusalReason> {
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0)));
    let addrs = match lookup.await {
        Err(_) => return Err(RefusalReason::Unresolvable { detail: format!("no answer in {RESOLVE_TIMEOUT:?}") }),
        Ok(Err(e)) => return Err(RefusalReason::Unresolvable { detail: e.to_string() }),
        Ok(Ok(addrs)) => addrs,
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in addrs {
        let ip = addr.ip().to_canonical();
        if let Some(range) = special_range(ip) {
            return Err(RefusalReason::SpecialAddress { address: ip, range, port });
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(RefusalReason::Unresolvable { detail: "no addresses".into() });
    }
    Ok(ips)
}

/// The special-purpose range `ip` belongs to, or `None` for a public
/// unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_range_v4(v4),
        IpAddr::V6(v6) => special_range_v6(v6),
    }
}

fn special_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified (0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_range_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Forms that carry an IPv4 address: judge the address they reach.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_range_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !(seg[6] == 0 && seg[7] <= 1) {
        return Some("IPv4-compatible (deprecated)");
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
        return special_range_v4(v4);
    }
    Some(match seg[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xff00..=0xffff => "multicast",
        0x2001 if seg[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x0100 if seg[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_named() {
        for (addr, range) in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.31.255.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::10.1.2.3", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            let got = special_range(ip(addr)).unwrap_or_else(|| panic!("{addr} passed as public"));
            assert!(got.contains(range), "{addr}: {got}");
        }
        for public in
            ["93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101"]
        {
            assert_eq!(special_range(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn grants_parse_names_ips_and_brackets() {
        let g = EgressGrant::parse("API.Example.com.:443").unwrap();
        assert_eq!(g.host, GrantHost::Name("api.example.com".into()));
        assert_eq!(EgressGrant::parse("[::1]:25").unwrap().to_string(), "[::1]:25");
        assert_eq!(EgressGrant::parse("127.0.0.1:2525").unwrap().host, GrantHost::Ip(ip("127.0.0.1")));
        assert_eq!(EgressGrant::parse("[::ffff:127.0.0.1]:1").unwrap().host, GrantHost::Ip(ip("127.0.0.1")));
        for bad in ["example.com", "example.com:0", "example.com:99999", ":80", "exa mple.com:80", "a/b:80"] {
            let err = EgressGrant::parse(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains("host:port"), "{err}");
        }
    }

    #[tokio::test]
    async fn ip_literals_need_their_own_grant() {
        let policy = EgressPolicy::new("c", &["127.0.0.1:2525".into()]).unwrap();
        assert_eq!(policy.check("127.0.0.1", 2525).await.unwrap(), vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(policy.check("[::ffff:127.0.0.1]", 2525).await.unwrap().len(), 1);
        let other_port = policy.check("127.0.0.1", 2526).await.unwrap_err();
        assert!(matches!(other_port.reason, RefusalReason::NotGranted { .. }), "{other_port}");
        assert!(other_port.to_string().contains("127.0.0.1:2526"), "{other_port}");
    }

    #[tokio::test]
    async fn a_granted_name_resolving_to_loopback_is_refused() {
        let policy = EgressPolicy::new("c", &["localhost:8080".into()]).unwrap();
        let refusal = policy.check("LOCALHOST.", 8080).await.unwrap_err();
        let text = refusal.to_string();
        assert!(matches!(refusal.reason, RefusalReason::SpecialAddress { .. }), "{text}");
        assert!(text.contains("localhost:8080") && text.contains("loopback") && text.contains("IP literal"), "{text}");
    }
}
