//! What the simulator runs: a [`Host`] is any sans-IO machine that takes datagrams,
//! messages and `now`, and yields what it sends, what it reports and when to wake it.
//!
//! The simulator knows nothing of DHTs or HTTP: it moves [`Payload`]s between addresses on
//! links, fires timers, and queues [`HostEvent`]s for the script. A bare [`Node`] is one
//! host; the others, built on the same trait, are a Grape with its API
//! ([`GrapeHost`](super::GrapeHost)), a peer client linked to a Grape
//! ([`ClientHost`](super::ClientHost)) and an echo RPC server
//! ([`EchoHost`](super::EchoHost)).

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use crate::api::Reply;
use crate::dht::event::Event;
use crate::dht::node::Node;
use crate::peer::{ClientEvent, HttpMethod, HttpResponse, TransportError, WatchEvent};

/// What travels between two hosts. HTTP messages are boxed: datagrams are most of what a
/// simulation moves, and the queue in flight holds them by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A UDP datagram: delayed, lost, duplicated and reordered as its link says.
    Datagram(Vec<u8>),
    /// An HTTP request on a connection. TCP hides loss behind retransmits, so a link
    /// only delays it; a dead or cut destination refuses it (the sender gets a
    /// [`Payload::HttpResponse`] with a [`TransportError`]).
    HttpRequest(Box<HttpCall>),
    /// The answer to a [`Payload::HttpRequest`], or why there is none.
    HttpResponse(Box<HttpAnswer>),
}

impl Payload {
    /// The bytes the trace hashes: a datagram, or a message's body.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Payload::Datagram(b) => b,
            Payload::HttpRequest(call) => &call.body,
            Payload::HttpResponse(answer) => match &answer.result {
                Ok(r) => &r.body,
                Err(e) => e.message.as_bytes(),
            },
        }
    }

    /// The answer to request `id`.
    pub fn http_response(id: u64, result: Result<HttpResponse, TransportError>) -> Payload {
        Payload::HttpResponse(Box::new(HttpAnswer { id, result }))
    }
}

/// The answer to one [`HttpCall`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The request's id, as its sender chose it.
    pub id: u64,
    /// The response, or the refusal of a connection that could not be made.
    pub result: Result<HttpResponse, TransportError>,
}

/// One HTTP request in flight between hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// Chosen by the sender, handed back in the response.
    pub id: u64,
    /// GET or POST.
    pub method: HttpMethod,
    /// Request target: path and query string.
    pub path: String,
    /// Headers the sender set.
    pub headers: Vec<(&'static str, &'static str)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Something a host sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Destination address.
    pub to: SocketAddr,
    /// What is sent.
    pub payload: Payload,
}

/// Something a host reports to the script.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HostEvent {
    /// A bare DHT node's event.
    Dht(Event),
    /// A Grape's reply to a request the script made through [`Sim::api`](super::Sim::api).
    Api(Reply),
    /// A peer client's event.
    Client(ClientEvent),
    /// A peer client's watch report.
    Watch(WatchEvent),
}

/// A sans-IO machine the simulator can run. Every input is followed by a [`Host::poll`];
/// then the simulator calls [`Host::handle_timeout`] at [`Host::poll_timeout`].
pub trait Host: Any + fmt::Debug {
    /// Takes one datagram or message from `from`.
    fn handle(&mut self, now: Instant, from: SocketAddr, payload: Payload);
    /// Runs whatever is due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// Drains what the host produced: what it sends into `out`, what it reports into
    /// `events`.
    fn poll(&mut self, now: Instant, out: &mut Vec<Output>, events: &mut Vec<HostEvent>);
    /// When [`Host::handle_timeout`] should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A fresh host of the same kind and settings, as a restarted process: new seed, no
    /// state.
    fn restarted(&self, seed: [u8; 32], now: Instant) -> Box<dyn Host>;
    /// The DHT node inside, if any: the simulator checks its invariants and measures the
    /// rounds of its lookups.
    fn node(&self) -> Option<&Node> {
        None
    }
    /// The DHT node inside, for commands, if the host lets the script drive it directly.
    fn node_mut(&mut self) -> Option<&mut Node> {
        None
    }
}

impl Host for Node {
    fn handle(&mut self, now: Instant, from: SocketAddr, payload: Payload) {
        // Only datagrams reach a DHT port; a connection to it is refused by the network.
        if let Payload::Datagram(bytes) = payload {
            self.handle_datagram(now, from, &bytes);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now);
    }

    fn poll(&mut self, _now: Instant, out: &mut Vec<Output>, events: &mut Vec<HostEvent>) {
        while let Some(t) = self.poll_transmit() {
            out.push(Output {
                to: t.to,
                payload: Payload::Datagram(t.payload),
            });
        }
        while let Some(e) = self.poll_event() {
            events.push(HostEvent::Dht(e));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }

    fn restarted(&self, seed: [u8; 32], now: Instant) -> Box<dyn Host> {
        Box::new(Node::new(self.config().clone(), seed, now))
    }

    fn node(&self) -> Option<&Node> {
        Some(self)
    }

    fn node_mut(&mut self) -> Option<&mut Node> {
        Some(self)
    }
}
