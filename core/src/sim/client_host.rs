//! A peer [`Client`] in the simulator: its HTTP exchanges (with its Grape's API and with
//! RPC servers) travel the simulated network as messages instead of sockets.
//!
//! Only HTTP is simulated: a WebSocket or ZeroMQ connection the client asks for is
//! reported closed at once, as a refused connect.

use std::net::SocketAddr;
use std::time::Instant;

use super::host::{Host, HostEvent, HttpAnswer, HttpCall, Output, Payload};
use crate::peer::{Client, ClientConfig, ConfigError, HttpId, Io, TransportError};

/// A peer [`Client`] as a simulator [`Host`].
#[derive(Debug)]
pub struct ClientHost {
    client: Client,
    config: ClientConfig,
}

impl ClientHost {
    /// A client with these settings (its Grape at `config.link.grape`, an
    /// `http://ip:port` of a [`GrapeHost`](super::GrapeHost)).
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn new(config: ClientConfig, seed: [u8; 32]) -> Result<ClientHost, ConfigError> {
        Ok(ClientHost {
            client: Client::new(config.clone(), seed)?,
            config,
        })
    }

    /// The client, for commands; the simulator drains it before its next step.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The client, to read.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Turns one network action into a message, or reports at once why it cannot go.
    fn route(&mut self, now: Instant, io: Io, out: &mut Vec<Output>) {
        match io {
            Io::Http(req) => match split_url(&req.url) {
                Some((to, path)) => out.push(Output {
                    to,
                    payload: Payload::HttpRequest(Box::new(HttpCall {
                        id: req.id.0,
                        method: req.method,
                        path: path.to_owned(),
                        headers: req.headers,
                        body: req.body,
                    })),
                }),
                None => {
                    let error = TransportError::unsent(format!("not a simulated URL: {}", req.url));
                    self.client.handle_http_reply(now, req.id, Err(error));
                }
            },
            Io::WsConnect { conn, .. } => self.client.handle_ws_closed(now, conn),
            Io::TcpConnect { conn, .. } => self.client.handle_tcp_closed(now, conn),
            Io::WsSend { .. } | Io::WsClose { .. } | Io::TcpSend { .. } | Io::TcpClose { .. } => {}
        }
    }
}

/// `http://1.2.3.4:5/path?q` as the address and the request target.
fn split_url(url: &str) -> Option<(SocketAddr, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    Some((authority.parse().ok()?, path))
}

impl Host for ClientHost {
    fn handle(&mut self, now: Instant, _from: SocketAddr, payload: Payload) {
        // A client serves nothing: requests and datagrams to it go unanswered.
        if let Payload::HttpResponse(answer) = payload {
            let HttpAnswer { id, result } = *answer;
            self.client.handle_http_reply(now, HttpId(id), result);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Output>, events: &mut Vec<HostEvent>) {
        // Reporting a refused connection can make more work: loop until none is left.
        while let Some(io) = self.client.poll_transmit() {
            self.route(now, io, out);
        }
        while let Some(e) = self.client.poll_event() {
            events.push(HostEvent::Client(e));
        }
        while let Some(w) = self.client.poll_watch() {
            events.push(HostEvent::Watch(w));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    fn restarted(&self, seed: [u8; 32], _now: Instant) -> Box<dyn Host> {
        match ClientHost::new(self.config.clone(), seed) {
            Ok(host) => Box::new(host),
            // The same settings were accepted once: cannot happen. Keep a host anyway.
            Err(_) => Box::new(super::EchoHost::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_target() {
        let addr = SocketAddr::from(([10, 0, 0, 1], 6881));
        assert_eq!(
            split_url("http://10.0.0.1:6881/lookup"),
            Some((addr, "/lookup"))
        );
        assert_eq!(split_url("http://10.0.0.1:6881"), Some((addr, "/")));
        assert_eq!(split_url("ws://10.0.0.1:6881/ws"), None);
        assert_eq!(split_url("http://grape:1/x"), None);
    }
}
