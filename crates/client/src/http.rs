//! Just enough HTTP/1.1 and WebSocket client for load: raw sockets, reused buffers, no
//! per-message allocation. Servers' frames are parsed in place from the read buffer.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

pub use crate::conn::{Conn, TlsClient};
use crate::target::Target;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Connects to the target from `source` (a loopback address), with `TCP_NODELAY`, and does the
/// TLS handshake when the target speaks TLS.
pub async fn connect(target: &Target, source: IpAddr) -> io::Result<Conn> {
    let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    match target.tls {
        None => Ok(Conn::Plain(stream)),
        Some(tls) => tls.handshake(target.addr.ip(), stream).await,
    }
}

/// A connection's read buffer: bytes `start..end` are unread.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// A buffer of `capacity` bytes (it grows only for a message larger than that).
    pub fn new(capacity: usize) -> ReadBuf {
        ReadBuf { buf: vec![0; capacity], start: 0, end: 0 }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more from `stream`; returns the number of bytes read (0 at end of stream).
    pub async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<usize> {
        self.fill_from(stream).await
    }

    /// Reads more from any reader; returns the number of bytes read (0 at end of stream).
    pub async fn fill_from<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// The parts of a response head the clients need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Retry-After` in seconds, if given.
    pub retry_after: Option<u64>,
}

/// Parses a response head from the start of `data`; returns it and its length, or `None` if
/// incomplete.
pub fn parse_head(data: &[u8]) -> io::Result<Option<(Head, usize)>> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        if data.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&data[..end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut head = Head { status, chunked: false, content_length: None, retry_after: None };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.parse().ok();
        }
    }
    Ok(Some((head, end + 4)))
}

/// The value of header `name` in the (complete) response head at the start of `data`.
pub fn header_value(data: &[u8], name: &str) -> Option<String> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&data[..end]).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// Reads a response head into `buf` (consuming it).
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut ReadBuf,
) -> io::Result<Head> {
    loop {
        if let Some((head, len)) = parse_head(buf.data())? {
            buf.consume(len);
            return Ok(head);
        }
        if buf.fill(stream).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
    }
}

/// Sends a GET request.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    path: &str,
    extra: &str,
) -> io::Result<()> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: townhall-load\r\n{extra}\r\n",
        target.addr
    );
    stream.write_all(req.as_bytes()).await
}

/// Sends a POST request with a JSON body.
pub async fn post<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> io::Result<()> {
    let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: townhall-load\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        target.addr,
        body.len()
    );
    stream.write_all(req.as_bytes()).await
}

/// Reads a whole (small) response body after its head.
pub async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut ReadBuf,
    head: Head,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut dechunk = Dechunker::default();
    loop {
        let data = buf.data();
        let used = if head.chunked {
            dechunk.feed(data, &mut body)?
        } else {
            body.extend_from_slice(data);
            data.len()
        };
        buf.consume(used);
        let done = if head.chunked {
            dechunk.done()
        } else {
            head.content_length.is_some_and(|n| body.len() >= n)
        };
        if done {
            return Ok(body);
        }
        if buf.fill(stream).await? == 0 {
            return if head.content_length.is_none() && !head.chunked {
                Ok(body)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"))
            };
        }
    }
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Debug, Default)]
pub struct Dechunker {
    /// Bytes left in the current chunk.
    remaining: usize,
    /// Bytes of the CRLF after a chunk still to skip.
    crlf: usize,
    finished: bool,
}

impl Dechunker {
    /// Consumes what it can of `data`, appending payload to `out`; returns bytes consumed.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut pos = 0;
        while pos < data.len() && !self.finished {
            if self.crlf > 0 {
                let skip = self.crlf.min(data.len() - pos);
                pos += skip;
                self.crlf -= skip;
            } else if self.remaining > 0 {
                let take = self.remaining.min(data.len() - pos);
                out.extend_from_slice(&data[pos..pos + take]);
                pos += take;
                self.remaining -= take;
                if self.remaining == 0 {
                    self.crlf = 2;
                }
            } else {
                let Some(eol) = data[pos..].windows(2).position(|w| w == b"\r\n") else {
                    break;
                };
                let line = std::str::from_utf8(&data[pos..pos + eol]).unwrap_or("");
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                })?;
                pos += eol + 2;
                if size == 0 {
                    self.finished = true;
                } else {
                    self.remaining = size;
                }
            }
        }
        Ok(pos)
    }

    /// The last (empty) chunk was seen.
    pub fn done(&self) -> bool {
        self.finished
    }
}

/// Opens a WebSocket: sends the upgrade request and reads the `101` head.
pub async fn ws_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    path: &str,
    buf: &mut ReadBuf,
) -> io::Result<Head> {
    ws_handshake_with(stream, target, path, None, buf).await
}

/// Like [`ws_handshake`], with a bearer token in the `Authorization` header (speaking tokens
/// never go into URLs).
pub async fn ws_handshake_with<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: &Target,
    path: &str,
    bearer: Option<&str>,
    buf: &mut ReadBuf,
) -> io::Result<Head> {
    let mut extra = String::from(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    if let Some(token) = bearer {
        extra.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    get(stream, target, path, &extra).await?;
    read_head(stream, buf).await
}

/// WebSocket opcodes the clients care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Text message.
    Text,
    /// Binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Anything else (pong, continuation).
    Other,
}

/// Parses one unmasked server frame from `data`: its opcode, payload range and total length.
pub fn parse_ws_frame(data: &[u8]) -> io::Result<Option<(Opcode, std::ops::Range<usize>, usize)>> {
    if data.len() < 2 {
        return Ok(None);
    }
    let opcode = match data[0] & 0x0F {
        0x1 => Opcode::Text,
        0x2 => Opcode::Binary,
        0x8 => Opcode::Close,
        0x9 => Opcode::Ping,
        _ => Opcode::Other,
    };
    if data[1] & 0x80 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "server frames must not be masked"));
    }
    let (len, header) = match data[1] & 0x7F {
        126 if data.len() >= 4 => (u64::from(u16::from_be_bytes([data[2], data[3]])), 4),
        127 if data.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    if len > 16 * 1024 * 1024 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    if data.len() < header + len {
        return Ok(None);
    }
    Ok(Some((opcode, header..header + len, header + len)))
}

/// Encodes a masked client frame (binary or text) into `out`.
pub fn encode_ws_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let code = match opcode {
        Opcode::Text => 0x1,
        Opcode::Close => 0x8,
        Opcode::Ping => 0x9,
        Opcode::Binary | Opcode::Other => 0x2,
    };
    out.push(0x80 | code);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heads_parse() {
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: audio/ogg\r\n\r\nrest";
        let (head, len) = parse_head(raw).expect("ok").expect("complete");
        assert_eq!(
            head,
            Head { status: 200, chunked: true, content_length: None, retry_after: None }
        );
        assert_eq!(&raw[len..], b"rest");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").expect("ok"), None);
    }

    #[test]
    fn chunks_decode_across_split_points() {
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        for split in 0..raw.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let used = d.feed(&raw[..split], &mut out).expect("feed");
            let mut rest = raw[used..].to_vec();
            while !d.done() {
                let n = d.feed(&rest, &mut out).expect("feed");
                assert!(n > 0 || d.done(), "progress at split {split}");
                rest.drain(..n);
            }
            assert_eq!(out, b"hello world", "split at {split}");
        }
    }

    #[test]
    fn frames_round_trip_when_unmasked() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_ws_frame(Opcode::Binary, &payload, [0; 4], &mut out);
            out[1] &= 0x7F; // as a server would send it: unmasked
            let header = out.len() - len - 4;
            out.drain(header..header + 4);
            let (op, range, total) = parse_ws_frame(&out).expect("ok").expect("complete");
            assert_eq!((op, range.len(), total), (Opcode::Binary, len, out.len()));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_head(&data);
            let _ = parse_ws_frame(&data);
            let _ = Dechunker::default().feed(&data, &mut Vec::new());
        }
    }
}
