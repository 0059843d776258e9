//! Who the client is when the connection comes through proxies: the address limits should key
//! on.
//!
//! Only a **trusted** proxy may speak for a client. A connection from anyone else is its own
//! client, whatever headers it sends, so an attacker cannot dodge per-address limits (or frame a
//! victim) by writing `X-Forwarded-For` itself.
//!
//! - [`TrustedProxies`]: addresses and CIDR ranges (`127.0.0.1`, `10.0.0.0/8`, `::1`,
//!   `2001:db8::/32`), as in the `trusted_proxies` setting.
//! - [`client_from_forwarded_for`]: the client behind trusted HTTP proxies, from
//!   `X-Forwarded-For`, read from the right and bounded in work.
//! - [`parse_proxy_header`]: the PROXY protocol (v1 text and v2 binary) that TCP load balancers
//!   put in front of a connection, parsed incrementally from the bytes read so far.
//!
//! The PROXY protocol parser is hand-written rather than taken from the `ppp` crate: the format
//! is small, and the server needs exactly these semantics: how many more bytes to read before a
//! decision ([`ProxyParse::Incomplete`]), strict bounds (107 bytes for v1, [`PROXY_V2_MAX_LEN`]
//! for v2, instead of up to 64 KiB), TLVs checked and skipped, and one error type; `ppp` reports
//! partial input without a byte count and would add a second `thiserror` major version.
//! Sans-IO: nothing here reads a socket.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A bad entry in a list of trusted proxies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    /// Neither an address nor `address/prefix`.
    #[error(
        "trusted proxy {entry:?}: expected an IP address or a CIDR range \
         (e.g. 10.0.0.1, 10.0.0.0/8, ::1, 2001:db8::/32)"
    )]
    Invalid {
        /// The entry as given.
        entry: String,
    },
    /// A prefix length beyond the address size (32 for IPv4, 128 for IPv6).
    #[error("trusted proxy {entry:?}: prefix length is over {max}")]
    PrefixTooLong {
        /// The entry as given.
        entry: String,
        /// The longest prefix for the address family.
        max: u8,
    },
    /// Address bits set beyond the prefix (`10.0.0.1/8`): probably a typo, so refused.
    #[error(
        "trusted proxy {entry:?}: address bits are set past the prefix; did you mean {network}?"
    )]
    HostBitsSet {
        /// The entry as given.
        entry: String,
        /// The range with those bits cleared.
        network: String,
    },
}

/// One trusted address or range, IPv4-mapped IPv6 written as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Net {
    V4 { addr: u32, prefix: u8 },
    V6 { addr: u128, prefix: u8 },
}

impl Net {
    fn new(ip: IpAddr, prefix: u8) -> Net {
        match ip {
            IpAddr::V4(v4) => Net::V4 { addr: u32::from(v4), prefix },
            // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Net::V4 { addr: u32::from(v4), prefix: prefix - 96 },
                _ => Net::V6 { addr: u128::from(v6), prefix },
            },
        }
    }

    fn contains(self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Net::V4 { addr, prefix }, IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(ip) & mask == addr
            }
            (Net::V6 { addr, prefix }, IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(ip) & mask == addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Net::V4 { addr, prefix: 32 } => write!(f, "{}", Ipv4Addr::from(addr)),
            Net::V4 { addr, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(addr)),
            Net::V6 { addr, prefix: 128 } => write!(f, "{}", Ipv6Addr::from(addr)),
            Net::V6 { addr, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(addr)),
        }
    }
}

impl FromStr for Net {
    type Err = TrustedProxyError;

    fn from_str(entry: &str) -> Result<Net, TrustedProxyError> {
        let invalid = || TrustedProxyError::Invalid { entry: entry.to_owned() };
        let (ip, prefix) = match entry.trim().split_once('/') {
            None => (entry.trim(), None),
            Some((ip, prefix)) => (ip, Some(prefix)),
        };
        let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| invalid())?
            }
            Some(_) => return Err(invalid()),
        };
        if prefix > max {
            return Err(TrustedProxyError::PrefixTooLong { entry: entry.to_owned(), max });
        }
        let network = match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        if network != ip {
            return Err(TrustedProxyError::HostBitsSet {
                entry: entry.to_owned(),
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(Net::new(ip, prefix))
    }
}

/// The proxies allowed to say who their clients are: single addresses and CIDR ranges of either
/// family. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, as dual-stack sockets report IPv4
/// clients) matches IPv4 entries.
///
/// Written as a list of strings (`["127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"]`) in
/// configuration ([`Deserialize`]), or one comma- or space-separated string ([`FromStr`]).
/// Lookups scan the list, which is meant to be short (a few proxies or ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TrustedProxies {
    nets: Vec<Net>,
}

impl TrustedProxies {
    /// No trusted proxies: every connection is its own client.
    pub fn none() -> TrustedProxies {
        TrustedProxies::default()
    }

    /// Parses entries such as `"127.0.0.1"`, `"10.0.0.0/8"`, `"::1"`, `"2001:db8::/32"`
    /// (surrounding whitespace ignored); the first bad entry is the error.
    pub fn parse<I, S>(entries: I) -> Result<TrustedProxies, TrustedProxyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = entries.into_iter().map(|e| e.as_ref().parse()).collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Entries (addresses and ranges) in the list.
    pub fn len(&self) -> usize {
        self.nets.len()
    }
}

impl FromIterator<IpAddr> for TrustedProxies {
    /// Trusts exactly these addresses.
    fn from_iter<T: IntoIterator<Item = IpAddr>>(iter: T) -> TrustedProxies {
        let nets = iter.into_iter().map(|ip| Net::new(ip, if ip.is_ipv4() { 32 } else { 128 }));
        TrustedProxies { nets: nets.collect() }
    }
}

impl FromStr for TrustedProxies {
    type Err = TrustedProxyError;

    /// A list separated by commas and/or whitespace (`"10.0.0.0/8, ::1"`), e.g. from an
    /// environment variable.
    fn from_str(list: &str) -> Result<TrustedProxies, TrustedProxyError> {
        TrustedProxies::parse(
            list.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()),
        )
    }
}

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = TrustedProxyError;

    fn try_from(entries: Vec<String>) -> Result<TrustedProxies, TrustedProxyError> {
        TrustedProxies::parse(entries)
    }
}

impl From<TrustedProxies> for Vec<String> {
    fn from(trusted: TrustedProxies) -> Vec<String> {
        trusted.nets.iter().map(Net::to_string).collect()
    }
}

impl fmt::Display for TrustedProxies {
    /// The entries, comma-separated (parses back with [`FromStr`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Most `X-Forwarded-For` entries looked at, from the right.
pub const MAX_FORWARDED_ENTRIES: usize = 64;
/// Most `X-Forwarded-For` bytes looked at, from the right (entries and separators).
pub const MAX_FORWARDED_BYTES: usize = 8 * 1024;

/// The client of a connection from `peer`, given the values of its `X-Forwarded-For` headers in
/// the order received (e.g. `headers.get_all("x-forwarded-for")`, or `&str`s).
///
/// - `peer` not trusted: `peer`, headers ignored (only trusted proxies may speak for clients).
/// - Otherwise the entries of all headers, read as one comma-separated list, are walked from the
///   right (the entries trusted proxies appended), skipping trusted addresses; the first
///   untrusted address is the client.
/// - If the walk runs out (no header, every entry trusted), meets an entry that is not an
///   address (`unknown`, garbage), or reaches its bound ([`MAX_FORWARDED_ENTRIES`] entries or
///   [`MAX_FORWARDED_BYTES`] bytes, counted from the right), the answer is the last trusted
///   address reached: the proxy nearest the client that the chain vouches for.
///
/// Entries may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:80`) or brackets (`[2001:db8::1]`);
/// whitespace around entries and empty entries are ignored. The address is returned as written
/// (an IPv4-mapped IPv6 address stays one; [`crate::ip_key`] treats both forms alike).
pub fn client_from_forwarded_for<I>(
    peer: IpAddr,
    header_values: I,
    trusted: &TrustedProxies,
) -> IpAddr
where
    I: IntoIterator,
    I::IntoIter: DoubleEndedIterator,
    I::Item: AsRef<[u8]>,
{
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let mut entries = 0;
    let mut budget = MAX_FORWARDED_BYTES;
    for value in header_values.into_iter().rev() {
        let value = value.as_ref();
        // Only the rightmost `budget` bytes are looked at; a piece cut by that window is not an
        // entry (the tail of `11.2.3.4` would read as `1.2.3.4`).
        let window = &value[value.len().saturating_sub(budget)..];
        let cut = window.len() < value.len();
        let mut pieces = window.rsplit(|&b| b == b',').peekable();
        while let Some(piece) = pieces.next() {
            entries += 1;
            if entries > MAX_FORWARDED_ENTRIES || (cut && pieces.peek().is_none()) {
                return client;
            }
            // Each piece and its separator (a comma, or the boundary between headers).
            budget = budget.saturating_sub(piece.len() + 1);
            let piece = piece.trim_ascii();
            if piece.is_empty() {
                continue;
            }
            let Some(ip) = parse_forwarded_entry(piece) else {
                return client;
            };
            if !trusted.contains(ip) {
                return ip;
            }
            client = ip;
        }
        if budget == 0 {
            return client;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with or without a port or brackets.
fn parse_forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let bracketed = text.strip_prefix('[')?.strip_suffix(']')?;
    bracketed.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The longest PROXY protocol v1 header, `\r\n` included.
pub const PROXY_V1_MAX_LEN: usize = 107;
/// The longest PROXY protocol v2 header accepted (16-byte preamble, addresses and TLVs). The
/// format allows 64 KiB; load balancers send well under this.
pub const PROXY_V2_MAX_LEN: usize = 4096;
/// The PROXY protocol v2 signature.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The shortest header of either version (`PROXY UNKNOWN\r\n`).
const PROXY_MIN_LEN: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";
const V2_PREAMBLE_LEN: usize = 16;

/// A PROXY protocol header that cannot be accepted (close the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start with neither the v1 `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// No complete header within the limit for its version.
    #[error("PROXY protocol header longer than {limit} bytes")]
    TooLong {
        /// The limit: [`PROXY_V1_MAX_LEN`] or [`PROXY_V2_MAX_LEN`].
        limit: usize,
    },
    /// A malformed v1 (text) header.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v2 version other than 2.
    #[error("unsupported PROXY v2 version {0}")]
    Version(u8),
    /// A v2 command other than LOCAL (0) and PROXY (1).
    #[error("unsupported PROXY v2 command {0}")]
    Command(u8),
    /// A v2 address family or transport outside the specification.
    #[error("unsupported PROXY v2 address family/transport byte {0:#04x}")]
    Family(u8),
    /// A v2 address block shorter than its family needs.
    #[error("PROXY v2 address block of {len} bytes, {family} needs {needed}")]
    AddressLength {
        /// The family (`IPv4`, `IPv6`, `unix`).
        family: &'static str,
        /// Bytes the family's addresses take.
        needed: usize,
        /// Bytes in the block.
        len: usize,
    },
    /// A v2 TLV running past the end of the header.
    #[error("PROXY v2 TLV runs past the end of the header")]
    Tlv,
}

/// Which PROXY protocol version a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// Text (`PROXY TCP4 …\r\n`).
    V1,
    /// Binary.
    V2,
}

/// What a PROXY protocol header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyCommand {
    /// The proxy's own connection (a health check): use the real endpoints (v2 only).
    Local,
    /// A relayed connection: the addresses, when present, are the client's and the proxy's.
    Proxy,
}

/// The transport of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyTransport {
    /// Not given (v1 `UNKNOWN`, v2 `UNSPEC`, LOCAL).
    Unspecified,
    /// TCP (or another stream protocol).
    Stream,
    /// UDP (or another datagram protocol; v2 only).
    Datagram,
}

/// A complete PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    /// Text or binary.
    pub version: ProxyVersion,
    /// LOCAL or PROXY.
    pub command: ProxyCommand,
    /// The relayed transport.
    pub transport: ProxyTransport,
    /// The client, when the header names one (absent for LOCAL, v1 `UNKNOWN`, v2 `UNSPEC` and
    /// unix sockets: use the connection's own peer then).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when the header names one.
    pub destination: Option<SocketAddr>,
    /// Bytes the header takes at the start of the stream: skip them; what follows is the
    /// client's data.
    pub header_len: usize,
}

impl ProxyHeader {
    /// The client: the header's source, or `peer` (the connection's own peer) when it names
    /// none.
    pub fn client(&self, peer: SocketAddr) -> SocketAddr {
        self.source.unwrap_or(peer)
    }
}

/// The result of parsing the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyParse {
    /// The bytes so far are a valid start: read at least `needed` more bytes, then parse the
    /// whole buffer again.
    Incomplete {
        /// A lower bound on the bytes still missing (exact for v2 once its 16-byte preamble is
        /// in; for v1, whose end is a `\r\n`, at least 1).
        needed: usize,
    },
    /// A complete header.
    Complete(ProxyHeader),
}

/// Parses a PROXY protocol header (v1 or v2, told apart by the first byte) at the start of
/// `buf`, the bytes read from a connection so far; bytes after the header are not looked at.
///
/// A server that requires the protocol reads until [`ProxyParse::Complete`] (or an error, or a
/// timeout), then skips [`ProxyHeader::header_len`] bytes. Work and buffering are bounded: no
/// header is accepted, or waited for, past [`PROXY_V1_MAX_LEN`] / [`PROXY_V2_MAX_LEN`] bytes.
/// Only accept the protocol from trusted load balancers ([`TrustedProxies`]): anyone else could
/// claim any source.
pub fn parse_proxy_header(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    match buf.first() {
        None => Ok(ProxyParse::Incomplete { needed: PROXY_MIN_LEN }),
        Some(b'\r') => parse_v2(buf),
        Some(b'P') => parse_v1(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    let prefix = buf.len().min(V1_PREFIX.len());
    if buf[..prefix] != V1_PREFIX[..prefix] {
        return Err(ProxyError::NotProxy);
    }
    let window = &buf[..buf.len().min(PROXY_V1_MAX_LEN)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if window.len() == PROXY_V1_MAX_LEN {
            return Err(ProxyError::TooLong { limit: PROXY_V1_MAX_LEN });
        }
        // Refuse binary junk now rather than after 107 bytes; a `\r` may only end the input.
        let (last, body) = window.split_last().unwrap_or((&b' ', &[]));
        if !body.iter().all(|b| matches!(b, b' '..=b'~')) || !matches!(last, b' '..=b'~' | b'\r') {
            return Err(ProxyError::V1("not printable ASCII"));
        }
        return Ok(ProxyParse::Incomplete {
            needed: PROXY_MIN_LEN.saturating_sub(window.len()).max(1),
        });
    };
    let header_len = newline + 1;
    let line = window[..newline].strip_suffix(b"\r").ok_or(ProxyError::V1("no CR before LF"))?;
    if !line.iter().all(|b| matches!(b, b' '..=b'~')) {
        return Err(ProxyError::V1("not printable ASCII"));
    }
    // Printable ASCII is UTF-8.
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::V1("not printable ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY", checked above.
    let family = parts.next().ok_or(ProxyError::V1("no protocol"))?;
    let (source, destination) = match family {
        // The receiver ignores whatever follows UNKNOWN.
        "UNKNOWN" => (None, None),
        "TCP4" | "TCP6" => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(ProxyError::V1("expected source, destination and two ports"));
            };
            let (src, dst) = if family == "TCP4" {
                let ip = |s: &str| s.parse::<Ipv4Addr>().map(IpAddr::V4);
                (ip(src), ip(dst))
            } else {
                let ip = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6);
                (ip(src), ip(dst))
            };
            let (Ok(src), Ok(dst)) = (src, dst) else {
                return Err(ProxyError::V1("bad address for the protocol"));
            };
            let (sport, dport) = (parse_v1_port(sport)?, parse_v1_port(dport)?);
            (Some(SocketAddr::new(src, sport)), Some(SocketAddr::new(dst, dport)))
        }
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let transport =
        if source.is_some() { ProxyTransport::Stream } else { ProxyTransport::Unspecified };
    Ok(ProxyParse::Complete(ProxyHeader {
        version: ProxyVersion::V1,
        command: ProxyCommand::Proxy,
        transport,
        source,
        destination,
        header_len,
    }))
}

/// A decimal port, 0..=65535, without leading zeros.
fn parse_v1_port(port: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::V1("bad port");
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if port.len() > 1 && port.starts_with('0') {
        return Err(bad);
    }
    port.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, ProxyError> {
    let signature = buf.len().min(PROXY_V2_SIGNATURE.len());
    if buf[..signature] != PROXY_V2_SIGNATURE[..signature] {
        return Err(ProxyError::NotProxy);
    }
    let Some(preamble) = buf.get(..V2_PREAMBLE_LEN) else {
        return Ok(ProxyParse::Incomplete { needed: V2_PREAMBLE_LEN - buf.len() });
    };
    let (version_command, family_transport) = (preamble[12], preamble[13]);
    let block_len = usize::from(u16::from_be_bytes([preamble[14], preamble[15]]));
    if version_command >> 4 != 2 {
        return Err(ProxyError::Version(version_command >> 4));
    }
    let command = match version_command & 0x0F {
        0 => ProxyCommand::Local,
        1 => ProxyCommand::Proxy,
        other => return Err(ProxyError::Command(other)),
    };
    let transport = match family_transport & 0x0F {
        0 => ProxyTransport::Unspecified,
        1 => ProxyTransport::Stream,
        2 => ProxyTransport::Datagram,
        _ => return Err(ProxyError::Family(family_transport)),
    };
    // (name, bytes of addresses and ports)
    let (family, address_len) = match family_transport >> 4 {
        0 => ("unspecified", 0),
        1 => ("IPv4", 12),
        2 => ("IPv6", 36),
        3 => ("unix", 216),
        _ => return Err(ProxyError::Family(family_transport)),
    };
    let header_len = V2_PREAMBLE_LEN + block_len;
    if header_len > PROXY_V2_MAX_LEN {
        return Err(ProxyError::TooLong { limit: PROXY_V2_MAX_LEN });
    }
    let Some(block) = buf.get(V2_PREAMBLE_LEN..header_len) else {
        return Ok(ProxyParse::Incomplete { needed: header_len - buf.len() });
    };
    if command == ProxyCommand::Local {
        // The receiver discards the block of a LOCAL header and uses the real endpoints.
        return Ok(ProxyParse::Complete(ProxyHeader {
            version: ProxyVersion::V2,
            command,
            transport: ProxyTransport::Unspecified,
            source: None,
            destination: None,
            header_len,
        }));
    }
    if block.len() < address_len {
        return Err(ProxyError::AddressLength { family, needed: address_len, len: block.len() });
    }
    let (addresses, tlvs) = block.split_at(address_len);
    check_tlvs(tlvs)?;
    let (source, destination) = match addresses.len() {
        12 => {
            let ip = |at: usize| {
                Ipv4Addr::new(
                    addresses[at],
                    addresses[at + 1],
                    addresses[at + 2],
                    addresses[at + 3],
                )
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            (
                Some(SocketAddr::V4(SocketAddrV4::new(ip(0), port(8)))),
                Some(SocketAddr::V4(SocketAddrV4::new(ip(4), port(10)))),
            )
        }
        36 => {
            let ip = |at: usize| {
                let mut octets = [0; 16];
                octets.copy_from_slice(&addresses[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([addresses[at], addresses[at + 1]]);
            (
                Some(SocketAddr::V6(SocketAddrV6::new(ip(0), port(32), 0, 0))),
                Some(SocketAddr::V6(SocketAddrV6::new(ip(16), port(34), 0, 0))),
            )
        }
        // Unspecified or unix: no socket addresses.
        _ => (None, None),
    };
    Ok(ProxyParse::Complete(ProxyHeader {
        version: ProxyVersion::V2,
        command,
        transport,
        source,
        destination,
        header_len,
    }))
}

/// Checks that the TLVs after the addresses (type, 16-bit length, value) fill the block exactly;
/// their contents are skipped.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let [_kind, hi, lo, rest @ ..] = tlvs else {
            return Err(ProxyError::Tlv);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        tlvs = rest.get(len..).ok_or(ProxyError::Tlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).expect("trusted proxies")
    }

    fn xff(peer: &str, headers: &[&str], trusted: &TrustedProxies) -> IpAddr {
        client_from_forwarded_for(ip(peer), headers.iter().copied(), trusted)
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let t = trusted(&["127.0.0.1", " 10.0.0.0/8 ", "::1", "2001:db8::/32", "0.0.0.0/0"]);
        assert_eq!(t.len(), 5);
        assert!(t.contains(ip("127.0.0.1")) && t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("::1")) && t.contains(ip("2001:db8:ffff::9")));
        assert!(!t.contains(ip("2001:db9::1")) && !t.contains(ip("::2")));
        assert!(t.contains(ip("8.8.8.8")), "0.0.0.0/0 trusts all IPv4");
        let t = trusted(&["10.0.0.0/8", "192.168.1.7"]);
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers match IPv4 entries");
        assert!(!t.contains(ip("11.0.0.0")) && !t.contains(ip("192.168.1.8")));
        assert!(trusted(&["::ffff:10.0.0.0/104"]).contains(ip("10.9.9.9")));
        assert!(TrustedProxies::none().is_empty());
        let from_ips: TrustedProxies = [ip("10.0.0.1"), ip("::1")].into_iter().collect();
        assert_eq!(from_ips, trusted(&["10.0.0.1", "::1"]));
    }

    #[test]
    fn bad_trusted_proxies_are_explained() {
        let err = |e: &str| TrustedProxies::parse([e]).expect_err(e);
        assert!(matches!(err("proxy.local"), TrustedProxyError::Invalid { .. }));
        for bad in ["", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/8/8", "10.0.0.0 /8", "1.2.3.4:80"] {
            assert!(matches!(err(bad), TrustedProxyError::Invalid { .. }), "{bad:?}");
        }
        assert_eq!(
            err("10.0.0.0/33"),
            TrustedProxyError::PrefixTooLong { entry: "10.0.0.0/33".into(), max: 32 }
        );
        assert_eq!(
            err("::/129"),
            TrustedProxyError::PrefixTooLong { entry: "::/129".into(), max: 128 }
        );
        let host_bits = err("10.1.2.3/8");
        assert_eq!(
            host_bits.to_string(),
            "trusted proxy \"10.1.2.3/8\": address bits are set past the prefix; \
             did you mean 10.0.0.0/8?"
        );
        assert!(err("bogus").to_string().contains("10.0.0.0/8"), "says what is expected");
    }

    #[test]
    fn trusted_proxies_read_and_write_as_configuration() {
        let t: TrustedProxies = "10.0.0.0/8, ::1 127.0.0.1".parse().expect("list");
        assert_eq!(t.to_string(), "10.0.0.0/8, ::1, 127.0.0.1");
        assert_eq!(t.to_string().parse::<TrustedProxies>(), Ok(t.clone()));
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(json, r#"["10.0.0.0/8","::1","127.0.0.1"]"#);
        assert_eq!(serde_json::from_str::<TrustedProxies>(&json).expect("deserialize"), t);
        let bad = serde_json::from_str::<TrustedProxies>(r#"["10.0.0.1/8"]"#).expect_err("bad");
        assert!(bad.to_string().contains("did you mean 10.0.0.0/8"), "{bad}");
    }

    #[test]
    fn an_untrusted_peer_speaks_for_itself() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff("203.0.113.9", &["198.51.100.1"], &t), ip("203.0.113.9"));
        assert_eq!(xff("203.0.113.9", &[], &TrustedProxies::none()), ip("203.0.113.9"));
        let nobody = TrustedProxies::none();
        assert_eq!(xff("10.0.0.1", &["198.51.100.1"], &nobody), ip("10.0.0.1"));
    }

    #[test]
    fn the_client_is_the_first_untrusted_entry_from_the_right() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client wrote a spoofed entry; the proxies appended the real one.
        assert_eq!(xff("10.0.0.1", &["6.6.6.6, 198.51.100.7"], &t), ip("198.51.100.7"));
        assert_eq!(xff("10.0.0.1", &["6.6.6.6,198.51.100.7, 10.0.0.2"], &t), ip("198.51.100.7"));
        // Several headers are one list, in order.
        assert_eq!(
            xff("10.0.0.1", &["6.6.6.6", "198.51.100.7", "10.0.0.3"], &t),
            ip("198.51.100.7")
        );
        // Ports, brackets, IPv6, whitespace, empty entries.
        assert_eq!(xff("10.0.0.1", &["1.1.1.1:5678 ,\t"], &t), ip("1.1.1.1"));
        assert_eq!(xff("10.0.0.1", &["[2001:db9::1]:80, 10.0.0.9"], &t), ip("2001:db9::1"));
        assert_eq!(xff("10.0.0.1", &["[2001:db9::2]"], &t), ip("2001:db9::2"));
        assert_eq!(xff("2001:db8::1", &["2001:db9::3, 2001:db8::7"], &t), ip("2001:db9::3"));
        assert_eq!(xff("::ffff:10.0.0.1", &["192.0.2.1"], &t), ip("192.0.2.1"));
    }

    #[test]
    fn without_an_untrusted_entry_the_answer_is_the_last_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(xff("10.0.0.1", &[], &t), ip("10.0.0.1"), "no header");
        assert_eq!(xff("10.0.0.1", &[""], &t), ip("10.0.0.1"), "empty header");
        assert_eq!(xff("10.0.0.1", &["10.0.0.3, 10.0.0.2"], &t), ip("10.0.0.3"), "all trusted");
        // Garbage stops the walk: nothing left of it is believed.
        assert_eq!(xff("10.0.0.1", &["1.1.1.1, unknown, 10.0.0.2"], &t), ip("10.0.0.2"));
        assert_eq!(xff("10.0.0.1", &["1.1.1.1, 1.1.1.1.1"], &t), ip("10.0.0.1"));
        assert_eq!(xff("10.0.0.1", &["1.1.1.1:99999"], &t), ip("10.0.0.1"));
        assert_eq!(xff("10.0.0.1", &["1.1.1.1", "\u{e9}"], &t), ip("10.0.0.1"));
        let non_utf8: [&[u8]; 1] = [b"1.1.1.1, \xff"];
        assert_eq!(client_from_forwarded_for(ip("10.0.0.1"), non_utf8, &t), ip("10.0.0.1"));
    }

    #[test]
    fn the_walk_is_bounded() {
        let t = trusted(&["10.0.0.0/8"]);
        // 63 trusted hops then the client: the client is the 64th entry, still looked at.
        let mut hops = vec!["198.51.100.1".to_owned()];
        hops.extend((0..63).map(|i| format!("10.0.0.{i}")));
        assert_eq!(xff("10.0.0.1", &[&hops.join(",")], &t), ip("198.51.100.1"));
        // One more hop and the client is past the bound: the last trusted hop answers.
        hops.push("10.0.1.1".to_owned());
        assert_eq!(xff("10.0.0.1", &[&hops.join(",")], &t), ip("10.0.0.0"));
        // As separate headers, likewise.
        let headers: Vec<&str> = hops.iter().map(String::as_str).collect();
        assert_eq!(xff("10.0.0.1", &headers, &t), ip("10.0.0.0"));
        // Megabytes of padding cost nothing: only the rightmost 8 KiB are looked at.
        let padded = format!("{}1.1.1.1, 10.0.0.2", " ".repeat(1 << 20));
        assert_eq!(xff("10.0.0.1", &[&padded], &t), ip("10.0.0.2"));
        // An entry cut by the window is not read (its tail would be another address).
        let fits = format!("1.2.3.4,{}", " ".repeat(MAX_FORWARDED_BYTES - 8));
        assert_eq!(fits.len(), MAX_FORWARDED_BYTES);
        assert_eq!(xff("10.0.0.1", &[&fits], &t), ip("1.2.3.4"));
        let cut = format!("11.2.3.4,{}", " ".repeat(MAX_FORWARDED_BYTES - 8));
        assert_eq!(xff("10.0.0.1", &[&cut], &t), ip("10.0.0.1"));
    }

    /// The walk without bounds, for comparison.
    fn reference(peer: IpAddr, headers: &[String], trusted: &TrustedProxies) -> IpAddr {
        if !trusted.contains(peer) {
            return peer;
        }
        let joined = headers.join(",");
        let mut client = peer;
        for entry in joined.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_forwarded_entry(entry.as_bytes()) {
                Some(ip) if trusted.contains(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }

    // --- PROXY protocol ---

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = PROXY_V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend((block.len() as u16).to_be_bytes());
        h.extend(block);
        h
    }

    /// A v2 PROXY header for `source` → `destination` (same family), with `tlvs` appended.
    fn encode_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        let family = match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                block.extend(s.ip().octets());
                block.extend(d.ip().octets());
                0x11
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                block.extend(s.ip().octets());
                block.extend(d.ip().octets());
                0x21
            }
            _ => panic!("mixed families"),
        };
        block.extend(source.port().to_be_bytes());
        block.extend(destination.port().to_be_bytes());
        block.extend(tlvs);
        v2(1, family, &block)
    }

    fn encode_v1(source: SocketAddr, destination: SocketAddr) -> String {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
    }

    fn complete(buf: &[u8]) -> ProxyHeader {
        match parse_proxy_header(buf) {
            Ok(ProxyParse::Complete(h)) => h,
            other => panic!("{other:?} for {buf:?}"),
        }
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn v1_headers() {
        let h = complete(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n");
        assert_eq!(
            h,
            ProxyHeader {
                version: ProxyVersion::V1,
                command: ProxyCommand::Proxy,
                transport: ProxyTransport::Stream,
                source: Some(sock("192.0.2.1:56324")),
                destination: Some(sock("198.51.100.2:443")),
                header_len: 45,
            }
        );
        assert_eq!(h.client(sock("10.0.0.1:1")), sock("192.0.2.1:56324"));
        let h = complete(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
        assert_eq!(h.source, Some(sock("[2001:db8::1]:65535")));
        assert_eq!(h.destination, Some(sock("[::1]:0")));
        let h = complete(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.source, h.transport, h.header_len), (None, ProxyTransport::Unspecified, 15));
        assert_eq!(h.client(sock("10.0.0.1:1")), sock("10.0.0.1:1"));
        let h = complete(b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 x y\r\n");
        assert_eq!(h.source, None, "anything after UNKNOWN is ignored");
        // The specification's longest header is exactly the limit.
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(longest.len(), PROXY_V1_MAX_LEN);
        assert_eq!(complete(longest.as_bytes()).header_len, PROXY_V1_MAX_LEN);
        let tcp6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(complete(tcp6.as_bytes()).source, Some(SocketAddr::new(ip(ffff), 65535)));
    }

    #[test]
    fn bad_v1_headers_are_refused() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 56324 443\r\n",
            b"PROXY TCP6 192.0.2.1 ::1 56324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY TCP4 192.0.2.01 198.51.100.2 1 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWN\r\r\n",
            b"PROXY TCP4 \x00",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), Err(ProxyError::V1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse_proxy_header(bad)
            );
        }
        assert_eq!(parse_proxy_header(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse_proxy_header(b"PROXx"), Err(ProxyError::NotProxy));
        assert_eq!(parse_proxy_header(b"PROXYTCP4"), Err(ProxyError::NotProxy));
        assert_eq!(parse_proxy_header(b"PROXY\r\n"), Err(ProxyError::NotProxy));
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert_eq!(
            parse_proxy_header(long.as_bytes()),
            Err(ProxyError::TooLong { limit: PROXY_V1_MAX_LEN })
        );
    }

    #[test]
    fn v2_headers() {
        // IPv4 over TCP (the specification's layout), with data after the header.
        let mut buf = encode_v2(sock("192.0.2.1:56324"), sock("198.51.100.2:443"), &[]);
        assert_eq!(
            buf,
            [
                &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"[..],
                &[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb][..],
            ]
            .concat()
        );
        buf.extend(b"\x16\x03\x01");
        assert_eq!(
            complete(&buf),
            ProxyHeader {
                version: ProxyVersion::V2,
                command: ProxyCommand::Proxy,
                transport: ProxyTransport::Stream,
                source: Some(sock("192.0.2.1:56324")),
                destination: Some(sock("198.51.100.2:443")),
                header_len: 28,
            }
        );
        // IPv6 over UDP.
        let mut udp6 = encode_v2(sock("[2001:db8::1]:5000"), sock("[2001:db8::2]:443"), &[]);
        udp6[13] = 0x22;
        let h = complete(&udp6);
        assert_eq!((h.transport, h.header_len), (ProxyTransport::Datagram, 52));
        assert_eq!(h.source, Some(sock("[2001:db8::1]:5000")));
        assert_eq!(h.destination, Some(sock("[2001:db8::2]:443")));
        // LOCAL (a health check): the block is discarded, whatever it holds.
        let h = complete(&v2(0, 0x00, &[]));
        assert_eq!((h.command, h.source, h.header_len), (ProxyCommand::Local, None, 16));
        let h = complete(&v2(0, 0x11, &[1, 2, 3]));
        assert_eq!((h.command, h.source, h.header_len), (ProxyCommand::Local, None, 19));
        // PROXY with an unspecified family or a unix socket: no addresses.
        let h = complete(&v2(1, 0x00, &[]));
        assert_eq!((h.command, h.source), (ProxyCommand::Proxy, None));
        let h = complete(&v2(1, 0x31, &[0; 216]));
        assert_eq!((h.source, h.destination, h.header_len), (None, None, 232));
    }

    #[test]
    fn v2_tlvs_are_skipped_but_must_fit() {
        // AWS-style VPC endpoint TLV (0xEA), a NOOP (0x04) and an empty ALPN (0x01).
        let mut tlvs = vec![0xEA, 0x00, 0x05, 0x01];
        tlvs.extend(b"vpce");
        tlvs.extend([0x04, 0x00, 0x02, 0, 0, 0x01, 0x00, 0x00]);
        let buf = encode_v2(sock("192.0.2.1:1"), sock("192.0.2.2:2"), &tlvs);
        let h = complete(&buf);
        assert_eq!(h.header_len, 28 + tlvs.len());
        assert_eq!(h.source, Some(sock("192.0.2.1:1")));
        for bad in [&[0xEA, 0x00, 0x06, 1, 2, 3, 4, 5][..], &[0x04, 0x00], &[0x04]] {
            let buf = encode_v2(sock("192.0.2.1:1"), sock("192.0.2.2:2"), bad);
            assert_eq!(parse_proxy_header(&buf), Err(ProxyError::Tlv), "{bad:?}");
        }
    }

    #[test]
    fn bad_v2_headers_are_refused() {
        let good = encode_v2(sock("192.0.2.1:1"), sock("192.0.2.2:2"), &[]);
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            parse_proxy_header(&b)
        };
        assert_eq!(with(12, 0x11), Err(ProxyError::Version(1)));
        assert_eq!(with(12, 0x22), Err(ProxyError::Command(2)));
        assert_eq!(with(13, 0x41), Err(ProxyError::Family(0x41)));
        assert_eq!(with(13, 0x13), Err(ProxyError::Family(0x13)));
        assert_eq!(with(5, b'X'), Err(ProxyError::NotProxy));
        assert_eq!(
            with(13, 0x21),
            Err(ProxyError::AddressLength { family: "IPv6", needed: 36, len: 12 })
        );
        // Too long is refused from the preamble alone, before the bytes are read.
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse_proxy_header(&huge), Err(ProxyError::TooLong { limit: PROXY_V2_MAX_LEN }));
        assert_eq!(parse_proxy_header(b"\r\n\r\nX"), Err(ProxyError::NotProxy));
        assert_eq!(parse_proxy_header(b"\x16\x03\x01"), Err(ProxyError::NotProxy), "TLS");
    }

    #[test]
    fn truncated_headers_are_incomplete() {
        let incomplete = |buf: &[u8]| match parse_proxy_header(buf) {
            Ok(ProxyParse::Incomplete { needed }) => needed,
            other => panic!("{other:?} for {buf:?}"),
        };
        assert_eq!(incomplete(b""), 15);
        let v2 = encode_v2(sock("192.0.2.1:56324"), sock("198.51.100.2:443"), &[0x04, 0, 1, 0]);
        for len in 0..v2.len() {
            let needed = incomplete(&v2[..len]);
            // Exact once the preamble is in; never past the end.
            assert!(len + needed <= v2.len(), "{len} + {needed}");
            if len >= 16 {
                assert_eq!(len + needed, v2.len());
            }
        }
        let v1 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        for len in 0..v1.len() {
            let needed = incomplete(&v1[..len]);
            assert!(len + needed <= v1.len(), "{len} + {needed}");
        }
        assert_eq!(incomplete(b"PROXY UNKNOWN\r"), 1);
    }

    proptest! {
        /// Arbitrary bytes never panic, and a parsed header never claims more bytes than given.
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(ProxyParse::Complete(h)) = parse_proxy_header(&buf) {
                prop_assert!(h.header_len <= buf.len());
            }
        }

        /// The same with the signatures in front, so the parsers get past the first bytes.
        #[test]
        fn arbitrary_bodies_never_panic(
            v2 in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut buf = if v2 { PROXY_V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
            buf.extend(body);
            match parse_proxy_header(&buf) {
                Ok(ProxyParse::Complete(h)) => prop_assert!(h.header_len <= buf.len()),
                Ok(ProxyParse::Incomplete { needed }) => {
                    prop_assert!(needed >= 1);
                    prop_assert!(buf.len() + needed <= PROXY_V2_MAX_LEN);
                }
                Err(_) => {}
            }
        }

        /// Headers built from arbitrary addresses parse back to them, in both versions, with
        /// trailing data left alone; every proper prefix is incomplete.
        #[test]
        fn headers_round_trip(
            v6 in any::<bool>(),
            (a, b) in (any::<u128>(), any::<u128>()),
            (sport, dport) in (any::<u16>(), any::<u16>()),
            tlv in proptest::collection::vec(any::<u8>(), 0..40),
            trailing in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let (source, destination) = if v6 {
                (SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), sport),
                 SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), dport))
            } else {
                (SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a as u32)), sport),
                 SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b as u32)), dport))
            };
            let mut tlvs = vec![0xE0, 0, tlv.len() as u8];
            tlvs.extend(&tlv);
            let headers = [
                (ProxyVersion::V2, encode_v2(source, destination, &tlvs)),
                (ProxyVersion::V1, encode_v1(source, destination).into_bytes()),
            ];
            for (version, header) in headers {
                let mut buf = header.clone();
                buf.extend(&trailing);
                let parsed = complete(&buf);
                prop_assert_eq!(parsed.version, version);
                prop_assert_eq!(parsed.source, Some(source));
                prop_assert_eq!(parsed.destination, Some(destination));
                prop_assert_eq!(parsed.header_len, header.len());
                for len in 0..header.len() {
                    let partial = parse_proxy_header(&header[..len]);
                    prop_assert!(
                        matches!(partial, Ok(ProxyParse::Incomplete { .. })),
                        "{:?} at {}", partial, len
                    );
                }
            }
        }

        /// Arbitrary header text never panics, and the answer is the peer or an address
        /// written in the headers.
        #[test]
        fn forwarded_for_answers_the_peer_or_a_listed_address(
            peer in prop_oneof![Just("10.0.0.1"), Just("192.0.2.1"), Just("::ffff:10.0.0.2")],
            headers in proptest::collection::vec("\\PC{0,40}", 0..4),
        ) {
            let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
            let peer = ip(peer);
            let client = client_from_forwarded_for(peer, &headers, &t);
            let listed: Vec<IpAddr> = headers
                .iter()
                .flat_map(|h| h.split(','))
                .filter_map(|e| parse_forwarded_entry(e.trim().as_bytes()))
                .collect();
            prop_assert!(client == peer || listed.contains(&client), "{} from {:?}", client, headers);
            if !t.contains(peer) {
                prop_assert_eq!(client, peer);
            }
        }

        /// Lists of addresses, ports, garbage and whitespace (under the bounds) give what the
        /// unbounded walk gives.
        #[test]
        fn forwarded_for_matches_the_plain_walk(
            peer in prop_oneof![Just("10.0.0.1"), Just("192.0.2.1")],
            headers in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        Just("10.1.2.3"), Just("10.9.9.9:443"), Just("192.0.2.7"),
                        Just("[2001:db8::5]:80"), Just("2001:db9::5"), Just("[2001:db9::6]"),
                        Just("unknown"), Just(""), Just(" 198.51.100.3 "), Just("::ffff:10.0.0.5"),
                    ],
                    0..6,
                ).prop_map(|entries| entries.join(",")),
                0..5,
            ),
        ) {
            let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
            let peer = ip(peer);
            prop_assert_eq!(
                client_from_forwarded_for(peer, &headers, &t),
                reference(peer, &headers, &t)
            );
        }
    }
}
