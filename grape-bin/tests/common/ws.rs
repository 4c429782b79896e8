//! A tiny blocking WebSocket client (RFC 6455, text frames only) over `std::net::TcpStream`.
//!
//! Enough to drive the Grape's `--apw` API: one handshake, masked text frames out, unmasked
//! frames in. Pings are answered, a close frame ends the stream.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A connected WebSocket client.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WsClient {
    /// Connects and completes the opening handshake on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> io::Result<Self> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        // The key only has to be 16 bytes in base64; the tests do not need it to be random.
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "closed during the handshake: {:?}",
                        String::from_utf8_lossy(&buf)
                    ),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("handshake refused: {head:?}")));
        }
        let rest = buf[end + 4..].to_vec();
        Ok(Self { stream, buf: rest })
    }

    /// Sends one text message.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send_frame(0x1, text.as_bytes())
    }

    /// Reads the next text message, answering pings on the way.
    pub fn recv_text(&mut self) -> io::Result<String> {
        loop {
            let (opcode, payload) = self.read_frame()?;
            match opcode {
                0x1 => {
                    return String::from_utf8(payload)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
                }
                0x8 => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("server closed the socket: {payload:?}"),
                    ));
                }
                0x9 => self.send_frame(0xA, &payload)?,
                _ => {}
            }
        }
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame)
    }

    /// Reads one whole frame (no fragmentation support: the Grape sends small replies).
    fn read_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        self.fill(2)?;
        let opcode = self.buf[0] & 0x0f;
        let masked = self.buf[1] & 0x80 != 0;
        let (len, mut at) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4)?;
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                self.fill(10)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mask = if masked {
            self.fill(at + 4)?;
            let m = [
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ];
            at += 4;
            Some(m)
        } else {
            None
        };
        self.fill(at + len)?;
        let mut payload: Vec<u8> = self.buf[at..at + len].to_vec();
        if let Some(m) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        self.buf.drain(..at + len);
        Ok((opcode, payload))
    }

    fn fill(&mut self, n: usize) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        while self.buf.len() < n {
            let got = self.stream.read(&mut chunk)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "socket closed mid-frame",
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }
}
