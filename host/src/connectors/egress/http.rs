//! `wasi:http` egress: every outgoing request is checked against the
//! connector's grants and sent to an address that passed the check (see the
//! threat model in [`super`]). The host's own HTTP/1.1 client connects to
//! that address; TLS verifies the certificate for the requested name.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tracing::Instrument;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::{EgressPolicy, EgressRefusal, RefusalReason};

/// Longest wait for a TCP (and TLS) connection, unless the guest asks for less.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the response head, unless the guest asks for less.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `wasi:http` hooks of one connector call.
pub struct EgressHttpHooks {
    policy: Arc<EgressPolicy>,
}

impl EgressHttpHooks {
    pub fn new(policy: Arc<EgressPolicy>) -> EgressHttpHooks {
        EgressHttpHooks { policy }
    }
}

type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for EgressHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> SendFuture {
        let policy = self.policy.clone();
        let authority = request.uri().authority().map(ToString::to_string).unwrap_or_default();
        let span = tracing::debug_span!("keel.connector.http", connector = policy.connector(), %authority);
        Box::new(async move { send_checked(&policy, request, options).await }.instrument(span))
    }
}

/// The error code the guest sees for a refusal; the host-side message is
/// in the call's refusal log.
fn guest_error(refusal: &EgressRefusal) -> Error {
    match refusal.reason {
        RefusalReason::SpecialAddress { .. } => Error::DestinationIpProhibited,
        RefusalReason::Unresolvable { .. } => Error::DnsError { rcode: Some("unresolvable".into()), info_code: None },
        _ => Error::HttpRequestDenied,
    }
}

async fn send_checked(
    policy: &EgressPolicy,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let uri = request.uri();
    let use_tls = uri.scheme() == Some(&Scheme::HTTPS);
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
    let addrs = match policy.check(&host, port).await {
        Ok(addrs) => addrs,
        Err(refusal) => {
            let error = guest_error(&refusal);
            policy.refuse(refusal);
            return Err(error);
        }
    };
    let connect_timeout = options.and_then(|o| o.connect_timeout).map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT));
    let first_byte_timeout =
        options.and_then(|o| o.first_byte_timeout).map_or(FIRST_BYTE_TIMEOUT, |t| t.min(FIRST_BYTE_TIMEOUT));

    let tcp = tokio::time::timeout(connect_timeout, connect_any(&addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    // The request line carries only the path: the authority went into the
    // `Host` header, and an absolute URI would address a proxy.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::builder().path_and_query(path).build().map_err(|_| Error::HttpRequestUriInvalid)?;

    let handshake = async {
        if use_tls {
            let name = tls_name(&host).map_err(|_| Error::HttpRequestUriInvalid)?;
            let tls = TlsConnector::from(TLS_CONFIG.clone()).connect(name, tcp).await.map_err(Error::Tls)?;
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map(|(s, c)| (s, Box::pin(c) as IoConn))
        } else {
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map(|(s, c)| (s, Box::pin(c) as IoConn))
        }
        .map_err(Error::from)
    };
    let (mut sender, connection) =
        tokio::time::timeout(connect_timeout, handshake).await.map_err(|_| Error::ConnectionTimeout)??;
    // The connection runs beside the request until the response body is
    // read; the guest's `wasi:http` future reports its errors.
    let connection = tokio::spawn(connection);
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let io: IoFuture = Box::new(async move {
        match connection.await {
            Ok(result) => result.map_err(Error::from),
            Err(join) => Err(Error::InternalError(Some(join.to_string()))),
        }
    });
    Ok((response.map(|body| body.map_err(Error::from).boxed_unsync()), io))
}

type IoConn = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// Connects to the first address that accepts, in the resolver's order.
async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn tls_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(bare.to_owned()).map_err(|e| e.to_string()),
    }
}

/// Web PKI roots, built once per process.
static TLS_CONFIG: LazyLock<Arc<ClientConfig>> = LazyLock::new(|| {
    let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
});
