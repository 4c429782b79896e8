//! KRPC datagrams the load generators send, built and read with the core's codec.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use grenache_core::NodeId;
use grenache_core::dht::Key;
use grenache_core::dht::krpc::{Body, Message, Method, Query, Response};

/// A query from `id` with a two-byte transaction id drawn from `i`.
pub fn query(id: NodeId, i: u64, method: Method) -> Vec<u8> {
    Message {
        tid: (i as u16).to_be_bytes().to_vec(),
        version: None,
        read_only: false,
        body: Body::Query(Query { id, method }),
    }
    .encode()
}

/// A key from a name (names are short ASCII, so always valid).
/// Datagrams can be large: the Node Grape answers a short key with dozens of nodes.
pub fn key(name: &str) -> Key {
    Key::new(name.as_bytes()).unwrap_or_else(|| Key::from(NodeId([7; 20])))
}

/// `announce_peer` of `name` at `port` with `token`.
pub fn announce(id: NodeId, i: u64, name: &str, port: u16, token: &[u8]) -> Vec<u8> {
    query(
        id,
        i,
        Method::AnnouncePeer {
            info_hash: key(name),
            port,
            implied_port: false,
            token: token.to_vec(),
        },
    )
}

/// A response carrying only our id (and a token, for `get_peers`), to answer a Grape's
/// queries to a fake node.
pub fn answer(to: &[u8], id: NodeId) -> Option<Vec<u8>> {
    let Ok(msg) = Message::decode(to) else {
        return None;
    };
    let Body::Query(q) = msg.body else {
        return None;
    };
    let mut r = Response::new(id);
    if matches!(q.method, Method::GetPeers { .. } | Method::Get { .. }) {
        r.token = Some(vec![1, 2, 3, 4]);
    }
    Some(
        Message {
            tid: msg.tid,
            version: None,
            read_only: false,
            body: Body::Response(r),
        }
        .encode(),
    )
}

/// Asks `target` one query and returns its response.
pub fn ask(target: SocketAddr, datagram: &[u8]) -> Result<Response, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    for _ in 0..10 {
        socket
            .send_to(datagram, target)
            .map_err(|e| e.to_string())?;
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from != target {
                continue;
            }
            if let Ok(Message {
                body: Body::Response(r),
                ..
            }) = Message::decode(buf.get(..n).unwrap_or_default())
            {
                return Ok(r);
            }
        }
    }
    Err(format!("{target} did not answer"))
}

/// The node id of the DHT node at `target` (from a ping).
pub fn node_id(target: SocketAddr) -> Result<NodeId, String> {
    Ok(ask(target, &query(NodeId([1; 20]), 1, Method::Ping))?.id)
}

/// A write token for 127.0.0.1 from the node at `target` (from a `get_peers`).
pub fn token(target: SocketAddr) -> Result<Vec<u8>, String> {
    let r = ask(
        target,
        &query(
            NodeId([2; 20]),
            2,
            Method::GetPeers {
                info_hash: Key::from(NodeId([2; 20])),
            },
        ),
    )?;
    r.token.ok_or_else(|| format!("{target} gave no token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_queries_and_only_queries() {
        let me = NodeId([3; 20]);
        let ping = query(NodeId([4; 20]), 9, Method::Ping);
        let reply = answer(&ping, me).unwrap();
        let Body::Response(r) = Message::decode(&reply).unwrap().body else {
            panic!("not a response");
        };
        assert_eq!(r.id, me);
        assert!(answer(&reply, me).is_none());
    }
}
