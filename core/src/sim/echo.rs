//! A peer RPC server that answers every request with its own payload: the simplest
//! service a simulated client can call, read and answered by the core's framing rules.

use std::net::SocketAddr;
use std::time::Instant;

use super::host::{Host, HostEvent, Output, Payload};
use crate::peer::{
    COMPRESS_HEADER, DEFAULT_MAX_FRAME_LEN, HttpResponse, decode_http_request, http_error_reply,
    reply_frame,
};

/// An HTTP RPC server answering `[rid, null, payload]` to `[rid, key, payload]`.
#[derive(Debug, Default)]
pub struct EchoHost {
    out: Vec<Output>,
    served: u64,
}

impl EchoHost {
    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served
    }
}

impl Host for EchoHost {
    fn handle(&mut self, _now: Instant, from: SocketAddr, payload: Payload) {
        let Payload::HttpRequest(call) = payload else {
            return;
        };
        let compress = call
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(COMPRESS_HEADER))
            .map(|(_, v)| *v);
        let response = match decode_http_request(compress, &call.body, DEFAULT_MAX_FRAME_LEN) {
            Ok((req, compression)) => {
                self.served += 1;
                let body = reply_frame(
                    &req.rid,
                    Ok(&req.payload),
                    compression,
                    DEFAULT_MAX_FRAME_LEN,
                );
                HttpResponse { status: 200, body }
            }
            Err(e) => http_error_reply(&e),
        };
        self.out.push(Output {
            to: from,
            payload: Payload::http_response(call.id, Ok(response)),
        });
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll(&mut self, _now: Instant, out: &mut Vec<Output>, _events: &mut Vec<HostEvent>) {
        out.append(&mut self.out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn restarted(&self, _seed: [u8; 32], _now: Instant) -> Box<dyn Host> {
        Box::new(EchoHost::default())
    }
}
