//! Falconet's Rust client: the stubs generated from proto/ (`api`) and a small client on top that connects over
//! the daemon's UNIX socket or over mutual TLS (rustls, ring) with the files `falconet certs init` writes, and
//! offers subscribe (Falco's `sub` or Falconet's batched stream, with reconnect and resume after the last
//! cursor), get and version. Alerts print as the alert JSON of docs/alert-json.md.

mod alert;
pub mod api;
mod resume;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic::Code;

pub use alert::{format_time, parse_priority, priority_name, Alert, Cursor};
use api::falco::outputs::service_client::ServiceClient as OutputsClient;
use api::falco::version::service_client::ServiceClient as VersionClient;
use api::falconet::v1::alert_service_client::AlertServiceClient;
use api::falconet::v1::{start, Filter as PbFilter, Start as PbStart};
pub use resume::{parse_position, POSITION_HEADER};
use resume::{position_of, Resume};

/// HTTP/2 flow-control window: large enough that a fast alert stream never waits for window updates (the
/// 64 KiB default caps a stream of ~600-byte alerts at a few thousand per second on a busy machine).
const WINDOW: u32 = 4 << 20;

/// Everything that can go wrong, each with a message meant for the user.
#[derive(Debug)]
pub enum Error {
    /// A bad option or certificate file, found before connecting.
    Config(String),
    /// The server could not be reached or refused us. `permanent`: retrying will not help (TLS refusal,
    /// invalid request).
    Connect {
        target: String,
        detail: String,
        permanent: bool,
    },
    /// The server sent something this client cannot decode.
    Decode(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) | Error::Decode(m) => f.write_str(m),
            Error::Connect { target, detail, .. } => write!(f, "{target}: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// Where the server is and how to authenticate.
#[derive(Clone, Debug)]
pub enum Config {
    /// The daemon's UNIX socket (a path, or a `unix://` URL); no TLS.
    Unix(String),
    /// An mTLS listener, `host:port`, with PEM files as written by `falconet certs init`.
    Tls {
        addr: String,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        server_name: Option<String>,
    },
}

/// Selects alerts on the server; the default accepts every alert.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub min_priority: Option<String>,
    pub rules: Vec<String>,
    pub tags: Vec<String>,
    pub sources: Vec<String>,
    /// Alert host names (a fleet aggregator serves many hosts; a node only its own).
    pub hosts: Vec<String>,
}

impl Filter {
    fn to_proto(&self) -> Result<Option<PbFilter>, Error> {
        if self.min_priority.is_none()
            && self.rules.is_empty()
            && self.tags.is_empty()
            && self.sources.is_empty()
            && self.hosts.is_empty()
        {
            return Ok(None);
        }
        Ok(Some(PbFilter {
            min_priority: self
                .min_priority
                .as_deref()
                .map(parse_priority)
                .transpose()?,
            rules: self.rules.clone(),
            tags: self.tags.clone(),
            sources: self.sources.clone(),
            hosts: self.hosts.clone(),
        }))
    }
}

/// Where reading starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Oldest,
    Now,
    After(Cursor),
}

impl std::str::FromStr for Start {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "oldest" => Ok(Start::Oldest),
            "now" => Ok(Start::Now),
            _ => s.parse().map(Start::After).map_err(|_| {
                Error::Config(format!(
                    "invalid start {s:?}; expected oldest, now or a cursor EPOCH:SEQUENCE"
                ))
            }),
        }
    }
}

impl Start {
    fn to_proto(&self) -> PbStart {
        let at = match self {
            Start::Oldest => start::At::Position(start::Position::Oldest as i32),
            Start::Now => start::At::Position(start::Position::Now as i32),
            Start::After(c) => start::At::After(api::falconet::v1::Cursor {
                epoch: c.epoch.clone(),
                sequence: c.sequence,
            }),
        };
        PbStart { at: Some(at) }
    }
}

/// Called with each retried failure and the wait before the next attempt.
pub type ReconnectHook = std::sync::Arc<dyn Fn(&Error, Duration) + Send + Sync>;

/// Called with what a subscription cannot do as asked: a malformed `falconet-position` header (ignored), or
/// a reconnect that may miss alerts because it has no position to resume after.
pub type WarningHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Options for [`Client::subscribe`].
#[derive(Clone)]
pub struct SubscribeOptions {
    /// Falconet's batched stream (many alerts per message) instead of Falco's `sub`.
    pub batched: bool,
    /// Upper bound on alerts per batch; 0 lets the server choose.
    pub max_batch: u32,
    /// Bounds of the wait between reconnection attempts.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Return the first connection failure instead of retrying, until one stream has been opened.
    pub fail_fast: bool,
    /// Told about each failure that is retried (a library prints nothing itself).
    pub on_reconnect: Option<ReconnectHook>,
    /// Told about each warning (see [`WarningHook`]).
    pub on_warning: Option<WarningHook>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            batched: false,
            max_batch: 0,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            fail_fast: false,
            on_reconnect: None,
            on_warning: None,
        }
    }
}

/// A connection to one Falconet (or Falco) server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    target: String,
}

fn read_pem(path: &PathBuf, what: &str, marker: &str) -> Result<Vec<u8>, Error> {
    let data = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&data).contains(marker) {
        return Err(Error::Config(format!(
            "{what} {} holds no PEM {}",
            path.display(),
            marker.trim_matches('-')
        )));
    }
    Ok(data)
}

impl Client {
    /// Checks the configuration and certificate files and prepares a lazy connection: the network connection
    /// is made by the first call and remade after failures.
    pub fn connect(config: &Config) -> Result<Client, Error> {
        match config {
            Config::Unix(s) => {
                let path = s
                    .strip_prefix("unix://")
                    .or_else(|| s.strip_prefix("unix:"))
                    .unwrap_or(s)
                    .to_string();
                if path.is_empty() {
                    return Err(Error::Config("the UNIX socket path is empty".into()));
                }
                let target = format!("unix://{path}");
                // The URI is a placeholder (it sets :authority); the connector dials the socket.
                let endpoint = Endpoint::from_static("http://localhost")
                    .connect_timeout(Duration::from_secs(10))
                    .initial_stream_window_size(WINDOW)
                    .initial_connection_window_size(2 * WINDOW);
                let channel =
                    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }));
                Ok(Client { channel, target })
            }
            Config::Tls {
                addr,
                ca,
                cert,
                key,
                server_name,
            } => {
                let host = match addr.rsplit_once(':') {
                    Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                        h.trim_matches(['[', ']']).to_string()
                    }
                    _ => return Err(Error::Config(format!("address {addr:?} is not host:port"))),
                };
                let ca_pem = read_pem(ca, "CA certificate", "-----BEGIN CERTIFICATE-----")?;
                let cert_pem = read_pem(cert, "client certificate", "-----BEGIN CERTIFICATE-----")?;
                let key_pem = read_pem(key, "client key", "PRIVATE KEY-----")?;
                check_client_chain(ca, &ca_pem, cert, &cert_pem)?;
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca_pem))
                    .identity(Identity::from_pem(cert_pem, key_pem))
                    .domain_name(server_name.clone().unwrap_or(host));
                let endpoint = Endpoint::from_shared(format!("https://{addr}"))
                    .map_err(|e| Error::Config(format!("address {addr:?}: {e}")))?
                    .connect_timeout(Duration::from_secs(10))
                    .initial_stream_window_size(WINDOW)
                    .initial_connection_window_size(2 * WINDOW)
                    .tls_config(tls)
                    .map_err(|e| {
                        Error::Config(format!("TLS settings for {addr}: {}", chain(&e)))
                    })?;
                Ok(Client {
                    channel: endpoint.connect_lazy(),
                    target: format!("{addr} (mTLS)"),
                })
            }
        }
    }

    /// The server's version and the rules-engine version it implements.
    pub async fn version(&self) -> Result<api::falco::version::Response, Error> {
        let mut c = VersionClient::new(self.channel.clone());
        c.version(api::falco::version::Request {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.explain(&s))
    }

    /// The retained alerts matching the filter from the start position on (non-destructive: no Falco cursor
    /// moves, since a start position is always sent).
    pub async fn get(&self, filter: &Filter, from: &Start) -> Result<Vec<Alert>, Error> {
        let mut c = OutputsClient::new(self.channel.clone()).max_decoding_message_size(64 << 20);
        let req = api::falco::outputs::Request {
            filter: filter.to_proto()?,
            start: Some(from.to_proto()),
        };
        let mut stream = c.get(req).await.map_err(|s| self.explain(&s))?.into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.map_err(|s| self.explain(&s))? {
            out.push(Alert::from_proto(r)?);
        }
        Ok(out)
    }

    /// Streams alerts to `f` until it returns `ControlFlow::Break` or a permanent error occurs. Lost
    /// connections are retried with back-off and resume just after the last alert delivered (before the first
    /// one, at the position the server reported in its `falconet-position` header).
    pub async fn subscribe<F>(
        &self,
        filter: &Filter,
        from: Start,
        opts: &SubscribeOptions,
        mut f: F,
    ) -> Result<(), Error>
    where
        F: FnMut(Alert) -> ControlFlow<()>,
    {
        let pf = filter.to_proto()?;
        let mut resume = Resume { from };
        let mut wait = opts.min_backoff;
        let mut opened = false;
        let warn = |msg: &str| {
            if let Some(hook) = &opts.on_warning {
                hook(msg);
            }
        };
        loop {
            let mut delivered = false;
            let from = resume.from.clone();
            let result = {
                // Both closures update the resume point; the stream calls them one at a time.
                let resume = std::cell::RefCell::new(&mut resume);
                self.stream_once(
                    pf.clone(),
                    &from,
                    opts,
                    &mut opened,
                    &mut |md: &tonic::metadata::MetadataMap| match position_of(md) {
                        Some(Ok(p)) => resume.borrow_mut().started_at(p),
                        Some(Err(e)) => warn(&format!("ignoring the server's {e}")),
                        None => {}
                    },
                    &mut |a: Alert| {
                        delivered = true;
                        resume.borrow_mut().delivered(a.cursor.as_ref());
                        f(a)
                    },
                )
                .await
            };
            let err = match result {
                Ok(true) => return Ok(()),
                Ok(false) => Error::Connect {
                    target: self.target.clone(),
                    detail: "the server ended the stream".into(),
                    permanent: false,
                },
                Err(
                    e @ Error::Connect {
                        permanent: false, ..
                    },
                ) if opened || !opts.fail_fast => e,
                Err(e) => return Err(e),
            };
            if let Some(hook) = &opts.on_reconnect {
                hook(&err, wait);
            }
            if resume.blind_spot() {
                warn("no alert received yet and the server reported no start position, so alerts published while disconnected may be missed");
            }
            if delivered {
                wait = opts.min_backoff;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(opts.max_backoff);
        }
    }

    /// One connection's worth of a subscription: Ok(true) when `f` stopped it, Ok(false) when the server ended it.
    /// `started` is given the stream's initial metadata (its `falconet-position`) before the first alert.
    async fn stream_once(
        &self,
        pf: Option<PbFilter>,
        from: &Start,
        opts: &SubscribeOptions,
        opened: &mut bool,
        started: &mut dyn FnMut(&tonic::metadata::MetadataMap),
        f: &mut dyn FnMut(Alert) -> ControlFlow<()>,
    ) -> Result<bool, Error> {
        if opts.batched {
            let mut c =
                AlertServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20);
            let req = api::falconet::v1::SubscribeRequest {
                filter: pf,
                start: Some(from.to_proto()),
                max_batch: opts.max_batch,
            };
            // tonic returns the response once the initial metadata has arrived.
            let response = c.subscribe(req).await.map_err(|s| self.explain(&s))?;
            *opened = true;
            started(response.metadata());
            let mut stream = response.into_inner();
            while let Some(batch) = stream.message().await.map_err(|s| self.explain(&s))? {
                for r in batch.alerts {
                    if f(Alert::from_proto(r)?).is_break() {
                        return Ok(true);
                    }
                }
            }
            return Ok(false);
        }
        let mut c = OutputsClient::new(self.channel.clone());
        // One request carries the filter and start; the server streams from then on. The request stream stays
        // open (pending) so the server never sees a half-close.
        let first = api::falco::outputs::Request {
            filter: pf,
            start: Some(from.to_proto()),
        };
        let requests = open_request_stream(first);
        let response = c.sub(requests).await.map_err(|s| self.explain(&s))?;
        *opened = true;
        started(response.metadata());
        let mut stream = response.into_inner();
        while let Some(r) = stream.message().await.map_err(|s| self.explain(&s))? {
            if f(Alert::from_proto(r)?).is_break() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Turns a gRPC status into an error that says what was tried and, for TLS, why it was refused.
    fn explain(&self, status: &tonic::Status) -> Error {
        // tonic repeats rustls' reason at several levels of the status and its sources: keep each part once.
        let mut parts: Vec<String> = vec![status.message().to_string()];
        let mut cur = std::error::Error::source(status);
        while let Some(e) = cur {
            parts.push(e.to_string());
            cur = e.source();
        }
        let parts: Vec<&String> = parts.iter().filter(|p| !p.is_empty()).collect();
        let kept: Vec<&str> = parts
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                !parts
                    .iter()
                    .enumerate()
                    .any(|(j, q)| (j < *i && q == *p) || (q != *p && q.contains(p.as_str())))
            })
            .map(|(_, p)| p.as_str())
            .collect();
        let full = kept.join(": ");
        let target = self.target.clone();
        let (detail, permanent) = match status.code() {
            Code::Unavailable | Code::Unknown => {
                if full.contains("UnknownIssuer") || full.contains("BadSignature") {
                    (format!("TLS handshake failed: the server certificate is not signed by the given CA ({full})"), true)
                } else if full.contains("NotValidForName") || full.contains("not valid for name") {
                    (format!("TLS handshake failed: the server name is not in the server certificate's SANs ({full})"), true)
                } else if full.contains("received fatal alert") {
                    // The server refused our certificate (with TLS 1.3 this surfaces after the handshake).
                    (format!("the server refused the TLS connection: {full} (is the client certificate signed by the server's CA?)"), true)
                } else if full.contains("invalid peer certificate") || full.contains("certificate") {
                    (format!("TLS handshake failed: {full}"), true)
                } else {
                    (format!("cannot connect: {full}"), false)
                }
            }
            Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented
            | Code::FailedPrecondition | Code::NotFound => (format!("{:?}: {full}", status.code()), true),
            _ if self.target.ends_with("(mTLS)")
                && ["connection closed", "connection reset", "broken pipe"].iter().any(|m| full.contains(m)) =>
            {
                (format!("the server closed the connection during TLS (did it refuse the client certificate?): {full}"), false)
            }
            code => (format!("{code:?}: {full}"), false),
        };
        Error::Connect {
            target,
            detail,
            permanent,
        }
    }
}

/// A request stream of one message that then stays open, like a Falco client that sends no keep-alives.
fn open_request_stream<T: Send + Unpin + 'static>(
    first: T,
) -> impl tokio_stream_like::Stream<Item = T> {
    tokio_stream_like::OnceThenPending(Some(first))
}

/// A minimal Stream, so that the crate needs no futures/tokio-stream dependency just for this.
mod tokio_stream_like {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub use tonic::codegen::tokio_stream::Stream;

    pub struct OnceThenPending<T>(pub Option<T>);
    impl<T: Unpin> Stream for OnceThenPending<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            match self.0.take() {
                Some(v) => Poll::Ready(Some(v)),
                None => Poll::Pending,
            }
        }
    }
}

/// Verifies that the client certificate chains to the CA for client authentication, as the server will.
fn check_client_chain(
    ca: &PathBuf,
    ca_pem: &[u8],
    cert: &PathBuf,
    cert_pem: &[u8],
) -> Result<(), Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};
    let ca_der = CertificateDer::from_pem_slice(ca_pem)
        .map_err(|e| Error::Config(format!("CA certificate {}: {e}", ca.display())))?;
    let leaf_der = CertificateDer::from_pem_slice(cert_pem)
        .map_err(|e| Error::Config(format!("client certificate {}: {e}", cert.display())))?;
    let anchor = webpki::anchor_from_trusted_cert(&ca_der)
        .map_err(|e| Error::Config(format!("CA certificate {}: {e:?}", ca.display())))?;
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| Error::Config(format!("client certificate {}: {e:?}", cert.display())))?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        Error::Config(format!(
            "client certificate {} does not chain to CA {}, so the server would refuse it: {e:?}",
            cert.display(),
            ca.display()
        ))
    })
}

/// An error and its sources, joined: tonic's transport errors keep the useful part (rustls' reason) deep.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
