//! TLS and mutual TLS for the HTTP and WebSocket peers, as grenache-nodejs-http and -ws
//! offer it with their `secure: {key, cert, ca}` option.
//!
//! One code path for both runtimes: rustls (ring provider) through futures-rustls, over
//! the futures-io stream every runtime already gives for WebSockets
//! ([`Runtime::WsIo`]). TLS is a stream wrapper and nothing more, so any transport that
//! reads and writes bytes can sit on it; hyper reads it through [`FuturesIo`].
//!
//! A server given a CA asks every client for a certificate and refuses one the CA did
//! not sign; the verified certificate reaches the handler as a [`PeerIdentity`], and an
//! allow-list of fingerprints and a `verify_client` hook can refuse it after that. Every
//! refused handshake is counted by [`TlsFailure`] and costs only its own connection.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{self, CertificateError, RootCertStore};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest as _, Sha256};

use crate::runtime::Runtime;
use crate::time::timeout;

/// Why TLS settings could not be built from the PEM given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM input could not be read or decoded.
    #[error("reading the {what} PEM: {reason}")]
    Pem {
        /// Which input: "certificate", "key" or "CA".
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A PEM input held no item of the kind needed.
    #[error("the {0} PEM holds no usable item")]
    Empty(&'static str),
    /// rustls refused the material (a key that does not match the certificate, a CA that
    /// is not a certificate, ...).
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA could not make a client verifier.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// A certificate's SHA-256 fingerprint, the one Node shows as `fingerprint256`
/// (`AB:CD:...`, upper-case hex with colons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// Text that is not 32 hex bytes (colons between them optional).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 fingerprint (32 hex bytes, colons optional)")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| BadFingerprint)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Fingerprint(out))
    }
}

/// Who is at the other end of a mutual-TLS connection: its certificate, verified against
/// the server's CA.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The client's certificate (the leaf), DER.
    pub der: Vec<u8>,
    /// Its SHA-256 fingerprint.
    pub sha256: Fingerprint,
    /// Its subject as RFC 4514 text (`CN=svc-a,O=Example`), empty if it cannot be read.
    pub subject: String,
}

impl PeerIdentity {
    /// The identity of a verified certificate.
    pub fn from_der(der: &[u8]) -> PeerIdentity {
        use x509_cert::der::Decode as _;
        let subject = match x509_cert::Certificate::from_der(der) {
            Ok(cert) => cert.tbs_certificate.subject.to_string(),
            Err(err) => {
                tracing::debug!(%err, "cannot read the peer certificate's subject");
                String::new()
            }
        };
        PeerIdentity {
            der: der.to_vec(),
            sha256: Fingerprint::of(der),
            subject,
        }
    }
}

/// A check on a verified client, as grenache-nodejs-ws's `verifyClient`.
pub type VerifyClient = Arc<dyn Fn(&PeerIdentity) -> bool + Send + Sync>;

/// A server's TLS settings: its certificate chain and key, and optionally a CA whose
/// clients alone it serves.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    mutual: bool,
    allowed: Option<Arc<BTreeSet<Fingerprint>>>,
    verify: Option<VerifyClient>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .field("allowed", &self.allowed.as_ref().map(|a| a.len()))
            .field("verify", &self.verify.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM bytes: the certificate chain (leaf first), its private key, and the CA
    /// that signs client certificates (`None`: any client, no certificate asked).
    ///
    /// # Errors
    /// [`TlsConfigError`] for unreadable PEM or material rustls refuses.
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        ca: Option<&[u8]>,
    ) -> Result<Self, TlsConfigError> {
        let chain = certs("certificate", cert_chain)?;
        let key = private_key(key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match ca {
            Some(ca) => {
                let roots = Arc::new(roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)?
            }
            None => builder.with_no_client_auth().with_single_cert(chain, key)?,
        };
        Ok(ServerTls {
            config: Arc::new(config),
            mutual: ca.is_some(),
            allowed: None,
            verify: None,
        })
    }

    /// [`from_pem`](Self::from_pem), reading the PEM files at these paths.
    ///
    /// # Errors
    /// [`TlsConfigError::Pem`] when a file cannot be read, else as `from_pem`.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: Option<&Path>,
    ) -> Result<Self, TlsConfigError> {
        let ca = ca.map(|p| read("CA", p)).transpose()?;
        Self::from_pem(
            &read("certificate", cert_chain.as_ref())?,
            &read("key", key.as_ref())?,
            ca.as_deref(),
        )
    }

    /// Serves only clients whose certificate has one of these fingerprints (the usual
    /// `verifyClient` of grenache-nodejs-ws). Needs a CA: without one no client shows a
    /// certificate, so every client is refused.
    #[must_use]
    pub fn allow_fingerprints(mut self, allowed: impl IntoIterator<Item = Fingerprint>) -> Self {
        self.allowed = Some(Arc::new(allowed.into_iter().collect()));
        self
    }

    /// Serves only clients for which `verify` says yes (after the CA and the allow-list).
    #[must_use]
    pub fn verify_client(
        mut self,
        verify: impl Fn(&PeerIdentity) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.verify = Some(Arc::new(verify));
        self
    }

    /// Whether a client that shows this certificate (or none) may go on.
    fn admits(&self, identity: Option<&PeerIdentity>) -> bool {
        let checked = self.allowed.is_some() || self.verify.is_some();
        match identity {
            None => !checked,
            Some(id) => {
                self.allowed.as_ref().is_none_or(|a| a.contains(&id.sha256))
                    && self.verify.as_ref().is_none_or(|verify| verify(id))
            }
        }
    }
}

/// A client's TLS settings: the CA its servers' certificates must chain to, and its own
/// certificate for servers that ask.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From PEM bytes: the CA, and optionally this client's certificate chain and key.
    ///
    /// # Errors
    /// [`TlsConfigError`] for unreadable PEM or material rustls refuses.
    pub fn from_pem(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Self, TlsConfigError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(ca)?);
        let config = match identity {
            Some((chain, key)) => {
                builder.with_client_auth_cert(certs("certificate", chain)?, private_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// [`from_pem`](Self::from_pem), reading the PEM files at these paths.
    ///
    /// # Errors
    /// [`TlsConfigError::Pem`] when a file cannot be read, else as `from_pem`.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsConfigError> {
        let identity = identity
            .map(|(c, k)| Ok::<_, TlsConfigError>((read("certificate", c)?, read("key", k)?)))
            .transpose()?;
        Self::from_pem(
            &read("CA", ca.as_ref())?,
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
    }
}

/// ring, not aws-lc-rs (which needs cmake to build). rustls deprecates ring's provider
/// for lacking post-quantum key exchange; docs/security.md says what that means.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Pem {
        what,
        reason: format!("{}: {e}", path.display()),
    })
}

fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty(what));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsConfigError::Empty("key"),
        e => TlsConfigError::Pem {
            what: "key",
            reason: e.to_string(),
        },
    })
}

fn roots(ca: &[u8]) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certs("CA", ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Why a TLS handshake failed, as far as the side that saw it can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The other side spoke something that is not TLS (plaintext to a TLS port, say).
    NotTls,
    /// Its certificate does not chain to our CA (or is badly signed).
    UnknownCa,
    /// Its certificate has expired.
    Expired,
    /// Its certificate is not valid yet.
    NotYetValid,
    /// Its certificate is not for the name or address we dialled.
    WrongName,
    /// Some other fault in its certificate.
    BadCertificate,
    /// A client showed no certificate where one is required.
    NoCertificate,
    /// The client's certificate was valid but not on the allow-list, or the
    /// `verify_client` hook refused it.
    NotAllowed,
    /// The other side refused the handshake (it sent an alert: it does not trust our
    /// certificate, say).
    Refused,
    /// The handshake did not finish in time.
    Timeout,
    /// The connection closed or broke during the handshake.
    Cut,
    /// Any other protocol failure (no common cipher or version, ...).
    Other,
}

impl TlsFailure {
    /// Every reason, in the order [`TlsStats`] keeps them.
    pub const ALL: [TlsFailure; 12] = [
        TlsFailure::NotTls,
        TlsFailure::UnknownCa,
        TlsFailure::Expired,
        TlsFailure::NotYetValid,
        TlsFailure::WrongName,
        TlsFailure::BadCertificate,
        TlsFailure::NoCertificate,
        TlsFailure::NotAllowed,
        TlsFailure::Refused,
        TlsFailure::Timeout,
        TlsFailure::Cut,
        TlsFailure::Other,
    ];

    /// The short code used in error messages and logs.
    pub fn code(self) -> &'static str {
        match self {
            TlsFailure::NotTls => "ERR_TLS_NOT_TLS",
            TlsFailure::UnknownCa => "ERR_TLS_UNKNOWN_CA",
            TlsFailure::Expired => "ERR_TLS_CERT_EXPIRED",
            TlsFailure::NotYetValid => "ERR_TLS_CERT_NOT_YET_VALID",
            TlsFailure::WrongName => "ERR_TLS_CERT_WRONG_NAME",
            TlsFailure::BadCertificate => "ERR_TLS_BAD_CERT",
            TlsFailure::NoCertificate => "ERR_TLS_NO_CERT",
            TlsFailure::NotAllowed => "ERR_TLS_NOT_ALLOWED",
            TlsFailure::Refused => "ERR_TLS_REFUSED",
            TlsFailure::Timeout => "ERR_TLS_TIMEOUT",
            TlsFailure::Cut => "ERR_TLS_CUT",
            TlsFailure::Other => "ERR_TLS_HANDSHAKE",
        }
    }

    fn index(self) -> usize {
        TlsFailure::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(TlsFailure::ALL.len() - 1)
    }

    /// Reads the reason off an I/O error from a handshake (rustls' error travels inside it).
    pub(crate) fn of(err: &io::Error) -> TlsFailure {
        let rustls_error = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(err) => TlsFailure::of_rustls(err),
            None => match err.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => TlsFailure::Cut,
                _ => TlsFailure::Other,
            },
        }
    }

    fn of_rustls(err: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match err {
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => TlsFailure::NotTls,
            E::NoCertificatesPresented => TlsFailure::NoCertificate,
            E::AlertReceived(_) => TlsFailure::Refused,
            E::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UnknownCa
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                _ => TlsFailure::BadCertificate,
            },
            _ => TlsFailure::Other,
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// TLS handshakes a server or client has done, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// Handshakes that succeeded (and, on a server, passed the allow-list and hook).
    pub established: u64,
    failed: [u64; TlsFailure::ALL.len()],
}

impl TlsStats {
    /// Handshakes that failed for `reason`.
    pub fn failed(&self, reason: TlsFailure) -> u64 {
        self.failed.get(reason.index()).copied().unwrap_or(0)
    }

    /// Handshakes that failed, for any reason.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

/// The live counters behind [`TlsStats`], shared by a server's or client's connections.
#[derive(Debug, Default)]
pub(crate) struct TlsCounters {
    established: AtomicU64,
    failed: [AtomicU64; TlsFailure::ALL.len()],
}

impl TlsCounters {
    pub(crate) fn count(&self, failure: TlsFailure) {
        if let Some(counter) = self.failed.get(failure.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> TlsStats {
        let mut stats = TlsStats {
            established: self.established.load(Ordering::Relaxed),
            ..TlsStats::default()
        };
        for (out, counter) in stats.failed.iter_mut().zip(&self.failed) {
            *out = counter.load(Ordering::Relaxed);
        }
        stats
    }
}

/// A TLS stream over the runtime's futures-io stream.
pub(crate) type TlsStream<R> = futures_rustls::TlsStream<TlsIo<R>>;

/// The socket under rustls: reads go through a buffer of this many bytes.
///
/// rustls reads at most 4 KiB at a time, so without it a 16 KiB record cost four
/// `recv`s, and 64 pipelined 10 KB requests a few hundred. One `recv` now takes up to
/// this much and rustls copies its 4 KiB slices out of it. Writes are not buffered:
/// rustls hands its queued records to one vectored write.
const TLS_READ_BUFFER: usize = 32 * 1024;

/// The runtime's stream with [`TLS_READ_BUFFER`] under its reads.
pub(crate) type TlsIo<R> = futures_util::io::BufReader<<R as Runtime>::WsIo>;

fn tls_io<R: Runtime>(stream: R::TcpStream) -> TlsIo<R> {
    futures_util::io::BufReader::with_capacity(TLS_READ_BUFFER, R::ws_io(stream))
}

/// A server's side of TLS: its settings, acceptor and counters.
#[derive(Debug)]
pub(crate) struct TlsServer {
    tls: ServerTls,
    counters: TlsCounters,
}

impl TlsServer {
    pub(crate) fn new(tls: ServerTls) -> Self {
        TlsServer {
            tls,
            counters: TlsCounters::default(),
        }
    }

    pub(crate) fn stats(&self) -> TlsStats {
        self.counters.snapshot()
    }

    /// The server side of the handshake within `limit`, then the allow-list and hook;
    /// a failure is logged and counted, and drops only this connection.
    pub(crate) async fn accept<R: Runtime>(
        &self,
        stream: R::TcpStream,
        limit: Duration,
    ) -> Option<(TlsStream<R>, Option<Arc<PeerIdentity>>)> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.tls.config));
        let handshake = acceptor.accept(tls_io::<R>(stream));
        let stream = match timeout::<R, _>(limit, handshake).await {
            Some(Ok(stream)) => stream,
            Some(Err(err)) => return self.refuse(TlsFailure::of(&err), &err),
            None => return self.refuse(TlsFailure::Timeout, &"no handshake in time"),
        };
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| Arc::new(PeerIdentity::from_der(leaf)));
        if !self.tls.admits(identity.as_deref()) {
            let subject = identity.as_ref().map(|id| id.subject.clone());
            return self.refuse(TlsFailure::NotAllowed, &format_args!("client {subject:?}"));
        }
        self.counters.established.fetch_add(1, Ordering::Relaxed);
        Some((futures_rustls::TlsStream::Server(stream), identity))
    }

    fn refuse<T>(&self, failure: TlsFailure, detail: &dyn fmt::Display) -> Option<T> {
        tracing::debug!(%failure, %detail, "TLS client refused");
        self.counters.count(failure);
        None
    }
}

/// A connection a server accepted, after its TLS handshake when the server has TLS.
pub(crate) enum Accepted<R: Runtime> {
    /// A plaintext server's connection.
    Plain(R::TcpStream),
    /// A TLS server's connection, with the client's verified identity if it showed one.
    Tls(Box<TlsStream<R>>, Option<Arc<PeerIdentity>>),
}

impl<R: Runtime> Accepted<R> {
    /// Runs the handshake when `tls` is set (within `limit`); `None` if it failed (logged
    /// and counted).
    pub(crate) async fn new(
        tls: Option<&TlsServer>,
        stream: R::TcpStream,
        limit: Duration,
    ) -> Option<Self> {
        match tls {
            None => Some(Accepted::Plain(stream)),
            Some(tls) => {
                let (stream, identity) = tls.accept::<R>(stream, limit).await?;
                Some(Accepted::Tls(Box::new(stream), identity))
            }
        }
    }

    /// The stream for a WebSocket, and the client's identity.
    pub(crate) fn into_ws(self) -> (MaybeTls<R>, Option<Arc<PeerIdentity>>) {
        match self {
            Accepted::Plain(stream) => (MaybeTls::Plain(R::ws_io(stream)), None),
            Accepted::Tls(stream, identity) => (MaybeTls::Tls(stream), identity),
        }
    }
}

/// A client's side of TLS: its settings and counters.
#[derive(Debug)]
pub(crate) struct TlsClient {
    tls: ClientTls,
    counters: TlsCounters,
}

impl TlsClient {
    pub(crate) fn new(tls: ClientTls) -> Self {
        TlsClient {
            tls,
            counters: TlsCounters::default(),
        }
    }

    pub(crate) fn stats(&self) -> TlsStats {
        self.counters.snapshot()
    }

    /// The client side of the handshake with `host` (a name or an IP address: the
    /// server's certificate must name it, as Node checks). The caller bounds its time.
    ///
    /// # Errors
    /// Why the handshake failed (counted).
    pub(crate) async fn connect<R: Runtime>(
        &self,
        host: &str,
        stream: R::TcpStream,
    ) -> Result<TlsStream<R>, TlsFailure> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            self.counters.count(TlsFailure::WrongName);
            TlsFailure::WrongName
        })?;
        let connector = TlsConnector::from(Arc::clone(&self.tls.config));
        match connector.connect(name, tls_io::<R>(stream)).await {
            Ok(stream) => {
                self.counters.established.fetch_add(1, Ordering::Relaxed);
                Ok(futures_rustls::TlsStream::Client(stream))
            }
            Err(err) => {
                let failure = TlsFailure::of(&err);
                tracing::debug!(%failure, %err, host, "TLS handshake failed");
                self.counters.count(failure);
                Err(failure)
            }
        }
    }
}

impl TlsFailure {
    /// The TLS failure behind an error on an established connection, if TLS caused it: in
    /// TLS 1.3 a server judges the client's certificate after the client's handshake has
    /// ended, so its refusal (an alert) surfaces on the first read.
    pub(crate) fn behind(err: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
        let mut next = Some(err);
        while let Some(err) = next {
            let inner = err
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            if let Some(rustls_error) = inner.or_else(|| err.downcast_ref::<rustls::Error>()) {
                return Some(TlsFailure::of_rustls(rustls_error));
            }
            next = err.source();
        }
        None
    }
}

impl TlsClient {
    /// Counts the TLS failure that ended an established connection, if TLS ended it.
    pub(crate) fn count_end(&self, err: &(dyn std::error::Error + 'static)) {
        if let Some(failure) = TlsFailure::behind(err) {
            tracing::debug!(%failure, %err, "TLS connection refused after its handshake");
            self.counters.count(failure);
        }
    }
}

/// A stream as it is served: plain, or inside TLS. One type, so the WebSocket code is
/// written once for both.
pub(crate) enum MaybeTls<R: Runtime> {
    /// No TLS.
    Plain(R::WsIo),
    /// Inside TLS (boxed: a TLS session is large, a plain stream small).
    Tls(Box<TlsStream<R>>),
}

impl<R: Runtime> AsyncRead for MaybeTls<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<R: Runtime> AsyncWrite for MaybeTls<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// A TLS stream as hyper reads and writes it (the runtimes' own glue serves plain TCP).
///
/// hyper's read cursor can only be filled safely by copying into it, so it is filled
/// straight from rustls's decrypted plaintext ([`io::BufRead`] on rustls's reader), not
/// through a buffer of ours: futures-rustls reads and decrypts, one byte of plaintext
/// comes out through it, and the rest of the record is copied once, into hyper's buffer.
pub(crate) struct FuturesIo<R: Runtime> {
    inner: TlsStream<R>,
}

impl<R: Runtime> FuturesIo<R> {
    pub(crate) fn new(inner: TlsStream<R>) -> Self {
        FuturesIo { inner }
    }

    /// Copies the plaintext rustls holds into `cursor`; false if it holds none (then
    /// futures-rustls reads, and reports an end or an error its own way).
    fn plaintext_to(&mut self, cursor: &mut hyper::rt::ReadBufCursor<'_>) -> bool {
        use std::io::BufRead as _;
        let mut reader = match &mut self.inner {
            futures_rustls::TlsStream::Client(s) => s.get_mut().1.reader(),
            futures_rustls::TlsStream::Server(s) => s.get_mut().1.reader(),
        };
        let n = match reader.fill_buf() {
            Ok(plaintext) if !plaintext.is_empty() => {
                let n = plaintext.len().min(cursor.remaining());
                cursor.put_slice(plaintext.get(..n).unwrap_or_default());
                n
            }
            _ => return false,
        };
        reader.consume(n);
        true
    }
}

impl<R: Runtime> hyper::rt::Read for FuturesIo<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if cursor.remaining() == 0 || this.plaintext_to(&mut cursor) {
            return Poll::Ready(Ok(()));
        }
        let mut first = [0u8; 1];
        match Pin::new(&mut this.inner).poll_read(cx, &mut first) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(_)) => {
                cursor.put_slice(&first);
                this.plaintext_to(&mut cursor);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<R: Runtime> hyper::rt::Write for FuturesIo<R> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    /// hyper's head and body go to rustls as they are: rustls seals several buffers into
    /// one record, where hyper would first copy them into one buffer of its own.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    /// futures-rustls writes vectored.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_and_print_in_nodes_format() {
        let fp = Fingerprint::of(b"certificate");
        let text = fp.to_string();

        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(
            text.replace(':', "").to_lowercase().parse::<Fingerprint>(),
            Ok(fp)
        );
        assert_eq!("AB:CD".parse::<Fingerprint>(), Err(BadFingerprint));
        assert_eq!("zz".repeat(32).parse::<Fingerprint>(), Err(BadFingerprint));
    }

    #[test]
    fn bad_pem_is_a_typed_error() {
        let none = ServerTls::from_pem(b"", b"", None).err();
        let garbage = ClientTls::from_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n", None).err();

        assert!(
            matches!(none, Some(TlsConfigError::Empty("certificate"))),
            "{none:?}"
        );
        assert!(
            matches!(garbage, Some(TlsConfigError::Pem { what: "CA", .. })),
            "{garbage:?}"
        );
    }
}
