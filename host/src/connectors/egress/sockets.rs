//! `wasi:sockets` egress: outgoing TCP to checked addresses only, and name
//! lookups answered by the host (see the threat model in [`super`]).
//!
//! How names map to addresses: when a call starts, the host resolves every
//! granted name once and checks every address ([`SocketAllowList::resolve`]).
//! A guest lookup of a granted name is answered with the first checked
//! address (one address, so the guest connects where the check looked); a
//! lookup of any other name fails with `access-denied` and sends no DNS
//! query. A TCP connect is allowed to a checked address of a granted name
//! on a port granted for that name, or to an IP literal grant. Everything
//! else (UDP, listen, accept, other ports) is refused and logged.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, Host, HostResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, Network};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};

use super::{EgressPolicy, EgressRefusal, GrantHost, RefusalReason, normalize_name, resolve_public};

/// What the guest may reach over `wasi:sockets` in one call.
#[derive(Debug, Default)]
pub struct SocketAllowList {
    /// Addresses (with port) a TCP connect may go to.
    connect: HashSet<SocketAddr>,
    /// Granted names: the address a lookup answers with, or why the name is
    /// refused.
    lookups: BTreeMap<String, Result<IpAddr, EgressRefusal>>,
}

impl SocketAllowList {
    /// Resolves and checks every granted name, concurrently.
    pub async fn resolve(policy: &EgressPolicy) -> SocketAllowList {
        let mut allow = SocketAllowList::default();
        let mut ports: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for grant in policy.grants() {
            match &grant.host {
                GrantHost::Ip(ip) => {
                    allow.connect.insert(SocketAddr::new(*ip, grant.port));
                }
                GrantHost::Name(name) => ports.entry(name.clone()).or_default().push(grant.port),
            }
        }
        let mut lookups = tokio::task::JoinSet::new();
        for (name, ports) in ports {
            lookups.spawn(async move {
                let result = resolve_public(&name, ports[0]).await;
                (name, ports, result)
            });
        }
        while let Some(joined) = lookups.join_next().await {
            let Ok((name, ports, result)) = joined else { continue };
            let answer = match result {
                Ok(ips) => {
                    for ip in &ips {
                        allow.connect.extend(ports.iter().map(|port| SocketAddr::new(*ip, *port)));
                    }
                    Ok(ips[0])
                }
                Err(reason) => Err(EgressRefusal { target: format!("{name}:{}", ports[0]), reason }),
            };
            allow.lookups.insert(name, answer);
        }
        allow
    }

    /// The answer to a guest's lookup of `name`.
    fn lookup(&self, name: &str) -> Result<IpAddr, EgressRefusal> {
        match self.lookups.get(&normalize_name(name)) {
            Some(answer) => answer.clone(),
            None => Err(EgressRefusal { target: name.to_owned(), reason: RefusalReason::NameNotGranted }),
        }
    }
}

/// The `socket_addr_check` for the connector's `WasiCtx`: a TCP connect to
/// an allowed address, and the implicit bind before it; nothing else.
pub fn socket_check(
    policy: Arc<EgressPolicy>,
    allow: Arc<SocketAllowList>,
) -> impl Fn(SocketAddr, SocketAddrUse) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + Sync>> + Send + Sync + 'static
{
    move |addr, usage| {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let refusal = match usage {
            SocketAddrUse::TcpConnect if allow.connect.contains(&addr) => None,
            // The bind a connect does first, to any local address.
            SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => None,
            SocketAddrUse::TcpConnect => Some(policy.not_granted(addr.to_string())),
            other => Some(EgressRefusal {
                target: addr.to_string(),
                reason: RefusalReason::UseRefused { what: use_name(other) },
            }),
        };
        let allowed = match refusal {
            None => true,
            Some(refusal) => {
                policy.refuse(refusal);
                false
            }
        };
        Box::pin(std::future::ready(allowed))
    }
}

fn use_name(usage: SocketAddrUse) -> &'static str {
    match usage {
        SocketAddrUse::TcpBind => "binding a TCP socket",
        SocketAddrUse::TcpListen => "listening on TCP",
        SocketAddrUse::TcpAccept => "accepting a TCP connection",
        SocketAddrUse::TcpConnect => "connecting over TCP",
        SocketAddrUse::UdpBind => "binding a UDP socket",
        SocketAddrUse::UdpSend => "sending UDP",
        SocketAddrUse::UdpReceive => "receiving UDP",
    }
}

/// `wasi:sockets/ip-name-lookup` for connectors: the lookup goes through
/// the allow list, the address stream is wasmtime's.
pub struct GuardedLookup<'a> {
    pub sockets: WasiSocketsCtxView<'a>,
    pub allow: &'a SocketAllowList,
    pub policy: &'a EgressPolicy,
}

struct GuardedLookupCapability;

impl HasData for GuardedLookupCapability {
    type Data<'a> = GuardedLookup<'a>;
}

/// Replaces wasmtime's `ip-name-lookup` in `linker` (which must already hold
/// WASI p2) with [`GuardedLookup`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> GuardedLookup<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let result = ip_name_lookup::add_to_linker::<T, GuardedLookupCapability>(linker, view);
    linker.allow_shadowing(false);
    result
}

impl Host for GuardedLookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ip_name_lookup::ResolveAddressStream>, SocketError> {
        let _span =
            tracing::debug_span!("keel.connector.resolve", connector = self.policy.connector(), %name).entered();
        let bare = name.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&name);
        // An IP literal needs no DNS; the connect check decides on it.
        let answer = match bare.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => match self.allow.lookup(bare) {
                Ok(ip) => ip,
                Err(refusal) => {
                    let code = match refusal.reason {
                        RefusalReason::Unresolvable { .. } => ErrorCode::NameUnresolvable,
                        _ => ErrorCode::AccessDenied,
                    };
                    self.policy.refuse(refusal);
                    return Err(code.into());
                }
            },
        };
        self.sockets.resolve_addresses(network, answer.to_string())
    }
}

// The lookup's error type converts through `wasi:sockets/network`; both
// conversions are wasmtime's.
impl network::Host for GuardedLookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(&mut self, error: Resource<network::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, error)
    }
}

impl network::HostNetwork for GuardedLookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, network)
    }
}

impl HostResolveAddressStream for GuardedLookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> Result<Option<ip_name_lookup::IpAddress>, SocketError> {
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ip_name_lookup::ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_go_only_to_checked_addresses() {
        let policy = Arc::new(EgressPolicy::new("c", &["127.0.0.1:2525".into(), "localhost:25".into()]).unwrap());
        let allow = Arc::new(SocketAllowList::resolve(&policy).await);
        let check = socket_check(policy.clone(), allow.clone());
        assert!(check("127.0.0.1:2525".parse().unwrap(), SocketAddrUse::TcpConnect).await);
        assert!(check("0.0.0.0:0".parse().unwrap(), SocketAddrUse::TcpBind).await);
        assert!(!check("127.0.0.1:25".parse().unwrap(), SocketAddrUse::TcpConnect).await);
        assert!(!check("127.0.0.1:2525".parse().unwrap(), SocketAddrUse::TcpListen).await);
        assert!(!check("127.0.0.1:2525".parse().unwrap(), SocketAddrUse::UdpBind).await);
        // `localhost` resolves to loopback: its lookup is refused, with advice.
        let refusal = allow.lookup("localhost").unwrap_err();
        assert!(refusal.to_string().contains("IP literal"), "{refusal}");
        let refusal = allow.lookup("example.com").unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::NameNotGranted);
        assert!(policy.refusals().first().unwrap().to_string().contains("127.0.0.1:25"));
    }
}
