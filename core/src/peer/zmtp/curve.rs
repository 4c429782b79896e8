//! The CURVE security mechanism (RFC 25 ZMTP-CURVE over RFC 26 CurveZMQ), sans-IO: key
//! types, the client's and server's handshake, and the MESSAGE boxes that carry frames.
//!
//! The handshake, after both greetings (mechanism `CURVE`, as-server 1 on the server):
//! 1. client → HELLO: its transient key C' and a box only the holder of the server's
//!    secret key can open (so a client with the wrong server key is caught here);
//! 2. server → WELCOME: its transient key S' and a cookie (C' and s' sealed with a key
//!    only this connection knows), boxed for C';
//! 3. client → INITIATE: the cookie back, and, boxed C'→S', its long-term key C, a
//!    vouch (C' and S boxed C→S', proving it holds c) and its metadata;
//! 4. server → READY: its metadata, boxed S'→C'.
//!
//! Then every ZMTP frame travels as a MESSAGE command: a short nonce and a box of
//! `flags ++ body`. Short nonces count up from 1 in each direction over HELLO, INITIATE,
//! READY and the MESSAGEs; one that does not go up is a fatal error (a replay).
//!
//! The cryptography is NaCl's crypto_box and crypto_secretbox from RustCrypto; this module
//! only lays out bytes. Randomness (transient keys, long nonces, the cookie key) is drawn
//! from the RNG the caller injects, when the connection is created.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};
use rand::RngCore;

use crate::peer::zmtp::ZmtpError;
use crate::peer::zmtp::frame;
use crate::peer::zmtp::z85::{self, Z85Error};

/// Length of a CURVE public or secret key.
pub(crate) const KEY_LEN: usize = 32;
/// Bytes a box adds to what it seals (the Poly1305 tag).
const TAG_LEN: usize = 16;
/// Bytes CURVE adds to one frame: `\x07MESSAGE`, the short nonce, the tag, the flags.
pub(crate) const MESSAGE_OVERHEAD: usize = 8 + 8 + TAG_LEN + 1;

/// Inner flag of a MESSAGE: more frames follow.
pub(crate) const MESSAGE_MORE: u8 = 0x01;
/// Inner flag of a MESSAGE: the frame is a command (PING, PONG, ...).
pub(crate) const MESSAGE_COMMAND: u8 = 0x02;

const HELLO_LEN: usize = 200 - 6; // the data after `\x05HELLO`
const WELCOME_LEN: usize = 168 - 8;
const COOKIE_LEN: usize = 16 + 64 + TAG_LEN;
/// INITIATE's data before the box: the cookie and the short nonce.
const INITIATE_HEAD: usize = COOKIE_LEN + 8;
/// INITIATE's box holds C, the vouch's long nonce and the vouch box, then metadata.
const INITIATE_FIXED: usize = KEY_LEN + 16 + 64 + TAG_LEN;

/// A CURVE public key (32 bytes; 40 characters of Z85 as text).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurvePublicKey([u8; KEY_LEN]);

impl CurvePublicKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        CurvePublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Reads the 40-character Z85 text libzmq and the `zeromq` npm package print.
    ///
    /// # Errors
    /// Not Z85, or not 32 bytes.
    pub fn from_z85(text: &str) -> Result<Self, CurveKeyError> {
        key_from_z85(text).map(CurvePublicKey)
    }

    /// The 40-character Z85 text.
    pub fn to_z85(&self) -> String {
        z85::encode(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for CurvePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurvePublicKey({self})")
    }
}

impl FromStr for CurvePublicKey {
    type Err = CurveKeyError;
    fn from_str(text: &str) -> Result<Self, CurveKeyError> {
        CurvePublicKey::from_z85(text)
    }
}

fn key_from_z85(text: &str) -> Result<[u8; KEY_LEN], CurveKeyError> {
    let bytes = z85::decode(text.trim()).map_err(CurveKeyError::Z85)?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| CurveKeyError::Length(bytes.len()))
}

/// Why a CURVE key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CurveKeyError {
    /// The text is not Z85.
    #[error("CURVE key: {0}")]
    Z85(Z85Error),
    /// The key is not 32 bytes (40 Z85 characters).
    #[error("CURVE key: {0} bytes, need 32 (40 Z85 characters)")]
    Length(usize),
}

/// A long-term CURVE key pair. The secret never shows in `Debug`.
#[derive(Clone)]
pub struct CurveKeyPair {
    secret: SecretKey,
    public: CurvePublicKey,
}

/// Pairs are equal when their public keys are (the public key is derived from the secret).
impl PartialEq for CurveKeyPair {
    fn eq(&self, other: &Self) -> bool {
        self.public == other.public
    }
}

impl Eq for CurveKeyPair {}

impl CurveKeyPair {
    /// The pair of this 32-byte secret key (the public key is derived from it).
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Self {
        let secret = SecretKey::from(secret);
        let public = CurvePublicKey(*secret.public_key().as_bytes());
        CurveKeyPair { secret, public }
    }

    /// The pair of a Z85 secret key (what `zmq_curve_keypair` and the npm package's
    /// `curveKeyPair()` print as the secret).
    ///
    /// # Errors
    /// Not Z85, or not 32 bytes.
    pub fn from_secret_z85(text: &str) -> Result<Self, CurveKeyError> {
        key_from_z85(text).map(CurveKeyPair::from_secret)
    }

    /// A fresh pair from `rng` (a CSPRNG: the OS's, or one seeded from it).
    pub fn generate(rng: &mut impl RngCore) -> Self {
        let mut secret = [0u8; KEY_LEN];
        rng.fill_bytes(&mut secret);
        CurveKeyPair::from_secret(secret)
    }

    /// The public half, to give to the other side.
    pub fn public(&self) -> CurvePublicKey {
        self.public
    }

    /// The secret key as Z85 text, to store it.
    pub fn secret_z85(&self) -> String {
        z85::encode(&self.secret.to_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for CurveKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A CURVE server: its key pair and, optionally, the client keys it lets in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurveServerConfig {
    keys: CurveKeyPair,
    allow: Option<BTreeSet<CurvePublicKey>>,
}

impl CurveServerConfig {
    /// A server with `keys` that lets in any client that knows its public key.
    pub fn new(keys: CurveKeyPair) -> Self {
        CurveServerConfig { keys, allow: None }
    }

    /// The same server letting in only clients whose long-term public key is listed.
    #[must_use]
    pub fn allow(mut self, clients: impl IntoIterator<Item = CurvePublicKey>) -> Self {
        self.allow = Some(clients.into_iter().collect());
        self
    }

    /// The server's public key, for its clients.
    pub fn public(&self) -> CurvePublicKey {
        self.keys.public
    }

    fn allows(&self, client: &CurvePublicKey) -> bool {
        self.allow.as_ref().is_none_or(|list| list.contains(client))
    }
}

/// A CURVE client: its key pair, the public key of the servers it trusts by default, and
/// the keys of services whose servers hold another one.
///
/// ```
/// use grenache_core::peer::zmtp::{CurveClientConfig, CurveKeyPair, Security};
///
/// let (ours, shared, billing) = (
///     CurveKeyPair::from_secret([1; 32]),
///     CurveKeyPair::from_secret([2; 32]),
///     CurveKeyPair::from_secret([3; 32]),
/// );
/// let config = CurveClientConfig::new(ours, shared.public()).service("billing", billing.public());
/// assert_eq!(config.server_for("billing"), billing.public());
/// assert_eq!(config.server_for("anything:else"), shared.public());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurveClientConfig {
    keys: CurveKeyPair,
    server: CurvePublicKey,
    /// Per service, the same client trusting that service's key (made once here, so a
    /// connection only clones an `Arc`); these have no services of their own.
    services: BTreeMap<String, Arc<CurveClientConfig>>,
}

impl CurveClientConfig {
    /// A client with `keys` that talks only to the holder of `server`'s secret key.
    pub fn new(keys: CurveKeyPair, server: CurvePublicKey) -> Self {
        CurveClientConfig {
            keys,
            server,
            services: BTreeMap::new(),
        }
    }

    /// The same client trusting `server` rather than the default key for `service`: RPC
    /// calls to that service name and subscriptions to that channel name. A later key for
    /// the same name replaces the earlier one.
    #[must_use]
    pub fn service(mut self, service: impl Into<String>, server: CurvePublicKey) -> Self {
        let own = CurveClientConfig::new(self.keys.clone(), server);
        self.services.insert(service.into(), Arc::new(own));
        self
    }

    /// The server key trusted for `service`: its own, or the default.
    pub fn server_for(&self, service: &str) -> CurvePublicKey {
        self.services.get(service).map_or(self.server, |c| c.server)
    }

    /// The client's public key (for the server's allow-list).
    pub fn public(&self) -> CurvePublicKey {
        self.keys.public
    }

    /// The server key it trusts by default.
    pub fn server(&self) -> CurvePublicKey {
        self.server
    }
}

/// The security mechanism of one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// No security (ZMTP's NULL mechanism): plaintext, anyone may connect.
    #[default]
    Null,
    /// CURVE, as the client (the side that knows the server's key).
    CurveClient(Arc<CurveClientConfig>),
    /// CURVE, as the server.
    CurveServer(Arc<CurveServerConfig>),
}

impl Security {
    /// CURVE as a client with `config`, or NULL without one.
    pub fn client(config: Option<&Arc<CurveClientConfig>>) -> Security {
        config.map_or(Security::Null, |c| Security::CurveClient(Arc::clone(c)))
    }

    /// CURVE as a client of `service` (a service or channel name) with `config`, trusting
    /// the server key it has for that name; NULL without a config.
    pub fn client_for(config: Option<&Arc<CurveClientConfig>>, service: &str) -> Security {
        config.map_or(Security::Null, |c| {
            Security::CurveClient(Arc::clone(c.services.get(service).unwrap_or(c)))
        })
    }

    /// CURVE as a server with `config`, or NULL without one.
    pub fn server(config: Option<&Arc<CurveServerConfig>>) -> Security {
        config.map_or(Security::Null, |c| Security::CurveServer(Arc::clone(c)))
    }

    /// The mechanism it uses on the wire.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Security::Null => Mechanism::Null,
            Security::CurveClient(_) | Security::CurveServer(_) => Mechanism::Curve,
        }
    }
}

/// A ZMTP security mechanism we speak, as the greeting names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `NULL`.
    Null,
    /// `CURVE`.
    Curve,
}

impl Mechanism {
    /// The name in the greeting.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Null => "NULL",
            Mechanism::Curve => "CURVE",
        }
    }

    pub(crate) fn parse(name: &[u8]) -> Option<Mechanism> {
        match name {
            b"NULL" => Some(Mechanism::Null),
            b"CURVE" => Some(Mechanism::Curve),
            _ => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a CURVE handshake or message failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CurveError {
    /// Both ends claim to be the CURVE server.
    #[error("both ends are CURVE {0}s")]
    SameRole(&'static str),
    /// A handshake command of the wrong length, version or name, or one out of turn.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A box that does not open: forged, corrupted, or sealed for other keys. On HELLO
    /// this is a client that uses another server key.
    #[error("{0} box does not open")]
    BadBox(&'static str),
    /// The client's long-term key is not on the server's allow-list.
    #[error("client key {0} is not allowed")]
    ClientNotAllowed(CurvePublicKey),
    /// A short nonce that did not go up: a replayed or reordered command.
    #[error("short nonce did not increase")]
    NonceReplay,
    /// Our short nonce counter is spent (after 2^64 - 1 commands): the connection ends.
    #[error("short nonces exhausted")]
    NoncesExhausted,
    /// The server refused our handshake with an ERROR (wrong server key, key not
    /// allowed); its reason.
    #[error("server refused the handshake: {0}")]
    Refused(String),
}

impl CurveError {
    /// A short code for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            CurveError::SameRole(_) => "ERR_CURVE_SAME_ROLE",
            CurveError::Malformed(_) => "ERR_CURVE_MALFORMED",
            CurveError::BadBox(_) => "ERR_CURVE_BAD_BOX",
            CurveError::ClientNotAllowed(_) => "ERR_CURVE_NOT_ALLOWED",
            CurveError::NonceReplay => "ERR_CURVE_NONCE",
            CurveError::NoncesExhausted => "ERR_CURVE_NONCE",
            CurveError::Refused(_) => "ERR_CURVE_REFUSED",
        }
    }
}

impl From<CurveError> for ZmtpError {
    fn from(err: CurveError) -> ZmtpError {
        ZmtpError::Curve(err)
    }
}

/// A 24-byte nonce: a prefix and the rest.
fn nonce(prefix: &[u8], rest: &[u8]) -> crypto_box::Nonce {
    let mut n = crypto_box::Nonce::default();
    let (head, tail) = n.split_at_mut(prefix.len().min(24));
    head.copy_from_slice(prefix.get(..head.len()).unwrap_or_default());
    let take = tail.len().min(rest.len());
    if let (Some(dst), Some(src)) = (tail.get_mut(..take), rest.get(..take)) {
        dst.copy_from_slice(src);
    }
    n
}

fn seal(cipher: &SalsaBox, n: &crypto_box::Nonce, plain: &[u8]) -> Result<Vec<u8>, ZmtpError> {
    cipher
        .encrypt(n, plain)
        .map_err(|_| ZmtpError::Curve(CurveError::Malformed("box too long to seal")))
}

fn open(
    cipher: &SalsaBox,
    n: &crypto_box::Nonce,
    sealed: &[u8],
    what: &'static str,
) -> Result<Vec<u8>, ZmtpError> {
    cipher
        .decrypt(n, sealed)
        .map_err(|_| ZmtpError::Curve(CurveError::BadBox(what)))
}

fn key_at(bytes: &[u8], at: usize) -> Option<[u8; KEY_LEN]> {
    bytes.get(at..at + KEY_LEN)?.try_into().ok()
}

fn short_nonce(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|n| u64::from_be_bytes(*n))
}

/// Where the handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    ExpectHello,
    ExpectWelcome,
    ExpectInitiate,
    ExpectReady,
    Done,
}

/// What one side holds.
enum Role {
    Client {
        config: Arc<CurveClientConfig>,
        /// C' and c'.
        transient: SecretKey,
        vouch_nonce: [u8; 16],
        /// The cookie from WELCOME, echoed in INITIATE.
        cookie: Vec<u8>,
    },
    Server {
        config: Arc<CurveServerConfig>,
        /// S' and s'.
        transient: SecretKey,
        /// K, the cookie key: this connection's own. A per-server key would let one
        /// connection's cookie be replayed on another; libzmq keeps one per connection too.
        cookie_key: [u8; KEY_LEN],
        cookie_nonce: [u8; 16],
        welcome_nonce: [u8; 16],
        /// C', from HELLO.
        client_transient: Option<PublicKey>,
        /// C, once INITIATE is accepted.
        client_key: Option<CurvePublicKey>,
    },
}

/// One connection's CURVE state.
pub(crate) struct Curve {
    role: Role,
    step: Step,
    /// Our next short nonce (1 first; each command takes one).
    next_nonce: u64,
    /// The peer's last short nonce; the next must be greater.
    peer_nonce: u64,
    /// The C'↔S' box, once both transient keys are known.
    session: Option<SalsaBox>,
}

impl fmt::Debug for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Curve")
            .field("server", &self.is_server())
            .field("step", &self.step)
            .field("next_nonce", &self.next_nonce)
            .field("peer_nonce", &self.peer_nonce)
            .finish_non_exhaustive()
    }
}

impl Curve {
    /// The CURVE state of `security`, drawing its random bytes from `rng`; `None` for NULL.
    pub(crate) fn new(security: &Security, rng: &mut impl RngCore) -> Option<Curve> {
        let mut key = || {
            let mut k = [0u8; KEY_LEN];
            rng.fill_bytes(&mut k);
            k
        };
        let role = match security {
            Security::Null => return None,
            Security::CurveClient(config) => {
                let transient = SecretKey::from(key());
                let vouch = key();
                Role::Client {
                    config: Arc::clone(config),
                    transient,
                    vouch_nonce: half(&vouch),
                    cookie: Vec::new(),
                }
            }
            Security::CurveServer(config) => {
                let transient = SecretKey::from(key());
                let cookie_key = key();
                let nonces = key();
                let (cookie_nonce, welcome_nonce) = nonces.split_at(16);
                Role::Server {
                    config: Arc::clone(config),
                    transient,
                    cookie_key,
                    cookie_nonce: half(cookie_nonce),
                    welcome_nonce: half(welcome_nonce),
                    client_transient: None,
                    client_key: None,
                }
            }
        };
        let step = match role {
            Role::Client { .. } => Step::ExpectWelcome,
            Role::Server { .. } => Step::ExpectHello,
        };
        Some(Curve {
            role,
            step,
            next_nonce: 1,
            peer_nonce: 0,
            session: None,
        })
    }

    pub(crate) fn is_server(&self) -> bool {
        matches!(self.role, Role::Server { .. })
    }

    /// The client's long-term key, on a server once INITIATE is accepted.
    pub(crate) fn client_key(&self) -> Option<CurvePublicKey> {
        match &self.role {
            Role::Server { client_key, .. } => *client_key,
            Role::Client { .. } => None,
        }
    }

    /// Checks the peer's as-server bit against our role. Only two servers are caught
    /// here: libzmq 4.3 leaves the bit 0 on its CURVE servers too, so a 0 proves nothing
    /// (two clients fail at once anyway: each gets a HELLO where it expects WELCOME).
    pub(crate) fn check_role(&self, peer_as_server: bool) -> Result<(), ZmtpError> {
        if self.is_server() && peer_as_server {
            return Err(CurveError::SameRole("server").into());
        }
        Ok(())
    }

    fn take_nonce(&mut self) -> Result<[u8; 8], ZmtpError> {
        let n = self.next_nonce;
        self.next_nonce = n.checked_add(1).ok_or(CurveError::NoncesExhausted)?;
        Ok(n.to_be_bytes())
    }

    fn check_peer_nonce(&mut self, n: u64) -> Result<(), ZmtpError> {
        if n <= self.peer_nonce {
            return Err(CurveError::NonceReplay.into());
        }
        self.peer_nonce = n;
        Ok(())
    }

    /// What the client writes right after its greeting: HELLO. Nothing on a server.
    pub(crate) fn start(&mut self, out: &mut Vec<u8>) -> Result<(), ZmtpError> {
        let Role::Client {
            config, transient, ..
        } = &self.role
        else {
            return Ok(());
        };
        let server = PublicKey::from(*config.server.as_bytes());
        let cipher = SalsaBox::new(&server, transient);
        let client_transient = transient.public_key();
        let short = self.take_nonce()?;
        let sealed = seal(&cipher, &nonce(b"CurveZMQHELLO---", &short), &[0; 64])?;
        let mut data = Vec::with_capacity(HELLO_LEN);
        data.extend_from_slice(&[1, 0]); // version 1.0
        data.extend_from_slice(&[0; 72]); // anti-amplification padding
        data.extend_from_slice(client_transient.as_bytes());
        data.extend_from_slice(&short);
        data.extend_from_slice(&sealed);
        frame::encode_command(out, b"HELLO", &data);
        Ok(())
    }

    /// A handshake command from the peer (not ERROR). Writes our answer to `out`; once
    /// the peer's metadata is in, returns it (the handshake is then done on our side).
    pub(crate) fn on_command(
        &mut self,
        name: &[u8],
        data: &[u8],
        metadata: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Vec<u8>>, ZmtpError> {
        match (self.step, name) {
            (Step::ExpectHello, b"HELLO") => self.on_hello(data, out).map(|()| None),
            (Step::ExpectWelcome, b"WELCOME") => {
                self.on_welcome(data, metadata, out).map(|()| None)
            }
            (Step::ExpectInitiate, b"INITIATE") => self.on_initiate(data, metadata, out).map(Some),
            (Step::ExpectReady, b"READY") => self.on_ready(data).map(Some),
            (Step::ExpectHello, _) => {
                Err(CurveError::Malformed("handshake: expected HELLO").into())
            }
            (Step::ExpectWelcome, _) => {
                Err(CurveError::Malformed("handshake: expected WELCOME").into())
            }
            (Step::ExpectInitiate, _) => {
                Err(CurveError::Malformed("handshake: expected INITIATE").into())
            }
            (Step::ExpectReady, _) => {
                Err(CurveError::Malformed("handshake: expected READY").into())
            }
            (Step::Done, _) => Err(CurveError::Malformed("command outside MESSAGE").into()),
        }
    }

    fn on_hello(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ZmtpError> {
        if data.len() != HELLO_LEN {
            return Err(CurveError::Malformed("HELLO").into());
        }
        if data.get(..2) != Some(&[1, 0][..]) {
            return Err(CurveError::Malformed("HELLO version").into());
        }
        let (Some(client), Some(short)) = (key_at(data, 74), short_nonce(&data[106..])) else {
            return Err(CurveError::Malformed("HELLO").into());
        };
        let sealed = data.get(114..).unwrap_or_default();
        self.check_peer_nonce(short)?;
        let Role::Server {
            config,
            transient,
            cookie_key,
            cookie_nonce,
            welcome_nonce,
            client_transient,
            ..
        } = &mut self.role
        else {
            return Err(CurveError::Malformed("HELLO to a client").into());
        };
        let client = PublicKey::from(client);
        let secret = config.keys.secret.clone();
        let hello = SalsaBox::new(&client, &secret);
        let opened = open(
            &hello,
            &nonce(b"CurveZMQHELLO---", &short.to_be_bytes()),
            sealed,
            "HELLO",
        )?;
        if opened.len() != 64 {
            return Err(CurveError::Malformed("HELLO box").into());
        }
        // The cookie: C' and s', sealed with this connection's key K.
        let mut cookie_plain = Vec::with_capacity(64);
        cookie_plain.extend_from_slice(client.as_bytes());
        cookie_plain.extend_from_slice(&transient.to_bytes());
        let cookie_cipher = XSalsa20Poly1305::new(&(*cookie_key).into());
        let cookie_box = cookie_cipher
            .encrypt(&nonce(b"COOKIE--", cookie_nonce), cookie_plain.as_slice())
            .map_err(|_| CurveError::Malformed("cookie"))?;
        let mut welcome_plain = Vec::with_capacity(KEY_LEN + COOKIE_LEN);
        welcome_plain.extend_from_slice(transient.public_key().as_bytes());
        welcome_plain.extend_from_slice(cookie_nonce);
        welcome_plain.extend_from_slice(&cookie_box);
        let welcome = seal(&hello, &nonce(b"WELCOME-", welcome_nonce), &welcome_plain)?;
        let mut data = Vec::with_capacity(WELCOME_LEN);
        data.extend_from_slice(welcome_nonce);
        data.extend_from_slice(&welcome);
        frame::encode_command(out, b"WELCOME", &data);
        *client_transient = Some(client);
        self.step = Step::ExpectInitiate;
        Ok(())
    }

    fn on_welcome(
        &mut self,
        data: &[u8],
        metadata: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ZmtpError> {
        if data.len() != WELCOME_LEN {
            return Err(CurveError::Malformed("WELCOME").into());
        }
        let (long, sealed) = data.split_at(16);
        let Role::Client {
            config,
            transient,
            vouch_nonce,
            cookie,
        } = &mut self.role
        else {
            return Err(CurveError::Malformed("WELCOME to a server").into());
        };
        let server = PublicKey::from(*config.server.as_bytes());
        let welcome = SalsaBox::new(&server, transient);
        let opened = open(&welcome, &nonce(b"WELCOME-", long), sealed, "WELCOME")?;
        let (Some(server_transient), Some(their_cookie)) =
            (key_at(&opened, 0), opened.get(KEY_LEN..))
        else {
            return Err(CurveError::Malformed("WELCOME box").into());
        };
        if their_cookie.len() != COOKIE_LEN {
            return Err(CurveError::Malformed("WELCOME box").into());
        }
        cookie.clear();
        cookie.extend_from_slice(their_cookie);
        let server_transient = PublicKey::from(server_transient);
        // The vouch: C' and S, boxed from our long-term key to S'.
        let vouch_cipher = SalsaBox::new(&server_transient, &config.keys.secret);
        let mut vouch_plain = Vec::with_capacity(2 * KEY_LEN);
        vouch_plain.extend_from_slice(transient.public_key().as_bytes());
        vouch_plain.extend_from_slice(config.server.as_bytes());
        let vouch = seal(
            &vouch_cipher,
            &nonce(b"VOUCH---", vouch_nonce),
            &vouch_plain,
        )?;
        let mut plain = Vec::with_capacity(INITIATE_FIXED - TAG_LEN + metadata.len());
        plain.extend_from_slice(config.keys.public.as_bytes());
        plain.extend_from_slice(vouch_nonce);
        plain.extend_from_slice(&vouch);
        plain.extend_from_slice(metadata);
        let session = SalsaBox::new(&server_transient, transient);
        let cookie = std::mem::take(cookie);
        let short = self.take_nonce()?;
        let sealed = seal(&session, &nonce(b"CurveZMQINITIATE", &short), &plain)?;
        let mut data = Vec::with_capacity(INITIATE_HEAD + sealed.len());
        data.extend_from_slice(&cookie);
        data.extend_from_slice(&short);
        data.extend_from_slice(&sealed);
        frame::encode_command(out, b"INITIATE", &data);
        self.session = Some(session);
        self.step = Step::ExpectReady;
        Ok(())
    }

    fn on_initiate(
        &mut self,
        data: &[u8],
        metadata: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Vec<u8>, ZmtpError> {
        if data.len() < INITIATE_HEAD + INITIATE_FIXED {
            return Err(CurveError::Malformed("INITIATE").into());
        }
        let (cookie, rest) = data.split_at(COOKIE_LEN);
        let (short, sealed) = rest.split_at(8);
        let short = short_nonce(short).unwrap_or_default();
        let Role::Server {
            config,
            transient,
            cookie_key,
            client_transient,
            client_key,
            ..
        } = &mut self.role
        else {
            return Err(CurveError::Malformed("INITIATE to a client").into());
        };
        let Some(client) = client_transient.clone() else {
            return Err(CurveError::Malformed("INITIATE before HELLO").into());
        };
        // The cookie must be ours, for this C' and our s'.
        let (cookie_nonce, cookie_box) = cookie.split_at(16);
        let cookie_cipher = XSalsa20Poly1305::new(&(*cookie_key).into());
        let cookie_plain = cookie_cipher
            .decrypt(&nonce(b"COOKIE--", cookie_nonce), cookie_box)
            .map_err(|_| CurveError::BadBox("cookie"))?;
        let mut expected = Vec::with_capacity(64);
        expected.extend_from_slice(client.as_bytes());
        expected.extend_from_slice(&transient.to_bytes());
        if cookie_plain != expected {
            return Err(CurveError::BadBox("cookie").into());
        }
        let session = SalsaBox::new(&client, transient);
        let plain = open(
            &session,
            &nonce(b"CurveZMQINITIATE", &short.to_be_bytes()),
            sealed,
            "INITIATE",
        )?;
        let (Some(long_term), Some(vouch_nonce), Some(vouch)) = (
            key_at(&plain, 0),
            plain.get(KEY_LEN..KEY_LEN + 16),
            plain.get(KEY_LEN + 16..KEY_LEN + 16 + 64 + TAG_LEN),
        ) else {
            return Err(CurveError::Malformed("INITIATE box").into());
        };
        let peer_metadata = plain.get(INITIATE_FIXED..).unwrap_or_default().to_vec();
        let long_term_key = PublicKey::from(long_term);
        let vouch_cipher = SalsaBox::new(&long_term_key, transient);
        let vouch = open(
            &vouch_cipher,
            &nonce(b"VOUCH---", vouch_nonce),
            vouch,
            "vouch",
        )?;
        let mut vouched = Vec::with_capacity(64);
        vouched.extend_from_slice(client.as_bytes());
        vouched.extend_from_slice(config.keys.public.as_bytes());
        if vouch != vouched {
            return Err(CurveError::BadBox("vouch").into());
        }
        let long_term = CurvePublicKey(long_term);
        if !config.allows(&long_term) {
            return Err(CurveError::ClientNotAllowed(long_term).into());
        }
        *client_key = Some(long_term);
        self.check_peer_nonce(short)?;
        let short = self.take_nonce()?;
        let sealed = seal(&session, &nonce(b"CurveZMQREADY---", &short), metadata)?;
        let mut data = Vec::with_capacity(8 + sealed.len());
        data.extend_from_slice(&short);
        data.extend_from_slice(&sealed);
        frame::encode_command(out, b"READY", &data);
        self.session = Some(session);
        self.step = Step::Done;
        Ok(peer_metadata)
    }

    fn on_ready(&mut self, data: &[u8]) -> Result<Vec<u8>, ZmtpError> {
        let (Some(short), Some(sealed)) = (short_nonce(data), data.get(8..)) else {
            return Err(CurveError::Malformed("READY").into());
        };
        let session = self
            .session
            .as_ref()
            .ok_or(CurveError::Malformed("READY before WELCOME"))?;
        let plain = open(
            session,
            &nonce(b"CurveZMQREADY---", &short.to_be_bytes()),
            sealed,
            "READY",
        )?;
        self.check_peer_nonce(short)?;
        self.step = Step::Done;
        Ok(plain)
    }

    /// Writes one frame (a message frame, or a command with [`MESSAGE_COMMAND`]) as a
    /// MESSAGE. Sent as a data frame with no flags, as libzmq does (the inner flags carry
    /// MORE); RFC 25's readers take either.
    pub(crate) fn encode_frame(
        &mut self,
        out: &mut Vec<u8>,
        flags: u8,
        body: &[u8],
    ) -> Result<(), ZmtpError> {
        let short = self.take_nonce()?;
        let session = self
            .session
            .as_ref()
            .ok_or(CurveError::Malformed("MESSAGE before the handshake"))?;
        let mut plain = Vec::with_capacity(1 + body.len());
        plain.push(flags);
        plain.extend_from_slice(body);
        let prefix = if self.is_server() {
            b"CurveZMQMESSAGES"
        } else {
            b"CurveZMQMESSAGEC"
        };
        let sealed = seal(session, &nonce(prefix, &short), &plain)?;
        let mut data = Vec::with_capacity(8 + 8 + sealed.len());
        data.extend_from_slice(b"\x07MESSAGE");
        data.extend_from_slice(&short);
        data.extend_from_slice(&sealed);
        frame::encode_frame(out, &data, false);
        Ok(())
    }

    /// Opens a MESSAGE (the whole frame body, from its name length on): the inner flags
    /// and the frame.
    pub(crate) fn decode_message(&mut self, body: &[u8]) -> Result<(u8, Vec<u8>), ZmtpError> {
        let rest = body
            .strip_prefix(b"\x07MESSAGE")
            .ok_or(CurveError::Malformed("frame other than MESSAGE"))?;
        let (Some(short), Some(sealed)) = (short_nonce(rest), rest.get(8..)) else {
            return Err(CurveError::Malformed("MESSAGE").into());
        };
        if sealed.len() < TAG_LEN + 1 {
            return Err(CurveError::Malformed("MESSAGE").into());
        }
        let session = self
            .session
            .as_ref()
            .ok_or(CurveError::Malformed("MESSAGE before the handshake"))?;
        let prefix = if self.is_server() {
            b"CurveZMQMESSAGEC"
        } else {
            b"CurveZMQMESSAGES"
        };
        let mut plain = open(
            session,
            &nonce(prefix, &short.to_be_bytes()),
            sealed,
            "MESSAGE",
        )?;
        // Only after the box opened: a forged nonce must not move the counter.
        self.check_peer_nonce(short)?;
        let flags = plain.first().copied().unwrap_or_default();
        if flags & !(MESSAGE_MORE | MESSAGE_COMMAND) != 0 {
            return Err(CurveError::Malformed("MESSAGE flags").into());
        }
        plain.remove(0);
        Ok((flags, plain))
    }
}

/// The first 16 bytes of `bytes` (zero-padded).
fn half(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let take = bytes.len().min(16);
    if let (Some(dst), Some(src)) = (out.get_mut(..take), bytes.get(..take)) {
        dst.copy_from_slice(src);
    }
    out
}
