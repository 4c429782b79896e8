//! A Grape in the simulator: its DHT port takes datagrams, its API takes HTTP requests
//! from peer clients on the network and from the script, as a local client would make them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::host::{Host, HostEvent, Output, Payload};
use crate::api::{Grape, GrapeConfig, HttpBody, RequestId};
use crate::dht::node::Node;
use crate::peer::{HttpMethod, HttpResponse};

/// Who waits for an API reply.
#[derive(Clone, Copy, Debug)]
enum Asker {
    /// The script, through [`Sim::api`](super::Sim::api): the reply becomes a
    /// [`HostEvent::Api`].
    Local,
    /// A host on the network: the reply goes back to it as an HTTP response.
    Remote { to: SocketAddr, id: u64 },
}

/// A [`Grape`] with its API, as a simulator [`Host`].
#[derive(Debug)]
pub struct GrapeHost {
    grape: Grape,
    config: GrapeConfig,
    next_req: u64,
    askers: BTreeMap<RequestId, Asker>,
}

impl GrapeHost {
    /// A Grape with these settings; everything random derives from `seed`.
    pub fn new(config: GrapeConfig, seed: [u8; 32], now: Instant) -> GrapeHost {
        GrapeHost {
            grape: Grape::new(config.clone(), seed, now),
            config,
            next_req: 0,
            askers: BTreeMap::new(),
        }
    }

    /// The Grape, to read.
    pub fn grape(&self) -> &Grape {
        &self.grape
    }

    /// The Grape, for commands such as [`Grape::bootstrap`]; the simulator drains it
    /// before its next step.
    pub fn grape_mut(&mut self) -> &mut Grape {
        &mut self.grape
    }

    /// Hands the Grape one API request from the script; its reply comes back as a
    /// [`HostEvent::Api`] naming the returned id.
    pub fn request(&mut self, now: Instant, method: &str, path: &str, body: &[u8]) -> RequestId {
        let req = self.next_request(Asker::Local);
        // A local client, as a Grape's own services are (exempt from per-client limits).
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        self.handle_http(now, local, req, method, path, body);
        req
    }

    fn next_request(&mut self, asker: Asker) -> RequestId {
        self.next_req += 1;
        let req = RequestId(self.next_req);
        self.askers.insert(req, asker);
        req
    }

    fn handle_http(
        &mut self,
        now: Instant,
        client: SocketAddr,
        req: RequestId,
        method: &str,
        path: &str,
        body: &[u8],
    ) {
        let body = if body.len() > self.grape.max_payload() {
            HttpBody::TooLarge
        } else {
            HttpBody::Complete(body)
        };
        self.grape.handle_http(now, client, req, method, path, body);
    }
}

impl Host for GrapeHost {
    fn handle(&mut self, now: Instant, from: SocketAddr, payload: Payload) {
        match payload {
            Payload::Datagram(bytes) => self.grape.handle_datagram(now, from, &bytes),
            Payload::HttpRequest(call) => {
                let req = self.next_request(Asker::Remote {
                    to: from,
                    id: call.id,
                });
                let method = match call.method {
                    HttpMethod::Get => "GET",
                    HttpMethod::Post => "POST",
                };
                self.handle_http(now, from, req, method, &call.path, &call.body);
            }
            // A Grape makes no HTTP requests of its own.
            Payload::HttpResponse(_) => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.grape.handle_timeout(now);
    }

    fn poll(&mut self, _now: Instant, out: &mut Vec<Output>, events: &mut Vec<HostEvent>) {
        while let Some(t) = self.grape.poll_transmit() {
            out.push(Output {
                to: t.to,
                payload: Payload::Datagram(t.payload),
            });
        }
        while let Some(reply) = self.grape.poll_reply() {
            // HTTP replies are final; only WebSocket watches (not simulated) say `more`.
            let asker = if reply.more {
                self.askers.get(&reply.req).copied()
            } else {
                self.askers.remove(&reply.req)
            };
            match asker {
                Some(Asker::Local) => events.push(HostEvent::Api(reply)),
                Some(Asker::Remote { to, id }) => out.push(Output {
                    to,
                    payload: Payload::http_response(
                        id,
                        Ok(HttpResponse {
                            status: reply.status,
                            body: reply.body,
                        }),
                    ),
                }),
                None => tracing::warn!(req = ?reply.req, "reply to no request"),
            }
        }
        while let Some(req) = self.grape.poll_ended() {
            self.askers.remove(&req);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.grape.poll_timeout()
    }

    fn restarted(&self, seed: [u8; 32], now: Instant) -> Box<dyn Host> {
        Box::new(GrapeHost::new(self.config.clone(), seed, now))
    }

    fn node(&self) -> Option<&Node> {
        Some(self.grape.node())
    }
}
