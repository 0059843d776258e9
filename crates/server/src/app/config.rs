//! Configuration: built-in defaults, overridden by an optional TOML file, overridden by
//! environment variables and command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything a node can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    pub listen: SocketAddr,
    /// Directory for recordings and (with `database`) the metadata database.
    pub data_dir: PathBuf,
    /// Keep metadata (spaces, schedules, bans, moderation log, reports, recordings index) in
    /// SQLite under `data_dir`, so it survives restarts. `townhall serve` turns this on unless
    /// given `--in-memory`; off, the same schema lives in memory (tests, throwaway nodes).
    pub database: bool,
    /// A live space with neither its host nor a co-host present for this long ends itself
    /// (seconds; 0 = never).
    pub host_absent_end_secs: u64,
    /// The width, in seconds, of the first buckets of each space's audience statistics (they
    /// double each time a space has 360 of them).
    pub stats_bucket_secs: u64,
    /// Start the demo space with its speaker bot.
    pub demo: bool,
    /// The URL users reach this node at (`http(s)://host[:port]`, no path), for printed links
    /// and for the absolute URLs of feeds, embeds and oEmbed (unset: `http://{listen}` when
    /// printed, the request's validated `Host` in answers).
    pub public_url: Option<String>,
    /// API key that names the token issuer (env `TOWNHALL_API_KEY`).
    pub api_key: Option<String>,
    /// Secret that signs tokens (env `TOWNHALL_API_SECRET`). Unset with no key either: a
    /// loopback node generates a pair kept in `data_dir`; any other node refuses to start.
    pub api_secret: Option<String>,
    /// Secret that signs webhook deliveries (env `TOWNHALL_WEBHOOK_SECRET`); generated and kept
    /// in `data_dir` when unset. Never the token secret: receivers must not be able to mint.
    pub webhook_secret: Option<String>,
    /// Most open (scheduled or live) spaces on this node.
    pub max_spaces: usize,
    /// Seats on each stage (host, co-hosts and speakers together).
    pub stage_seats: usize,
    /// Program stream bitrate, bit/s.
    pub bitrate: i32,
    /// Duration of one Ogg page of the HTTP stream, ms (multiple of 20).
    pub ogg_page_ms: u32,
    /// Recent audio a new Ogg listener receives at once so players start quickly, ms.
    pub ogg_burst_ms: u32,
    /// Frames per WebSocket message for listeners who do not ask (1 = lowest latency).
    pub ws_batch_frames: usize,
    /// A connection whose socket accepts no bytes for this long is closed (slow-read defence).
    pub stall_timeout_secs: u64,
    /// A request head must arrive within this many seconds (slowloris defence).
    pub header_timeout_secs: u64,
    /// Kernel send buffer per connection, bytes (`None`: the kernel's autotuning). Smaller
    /// buffers cap kernel memory per listener and detect stalled readers sooner.
    pub socket_send_buffer: Option<u32>,
    /// On SIGTERM, the window over which listeners are sent off (evenly) to reconnect through
    /// the door elsewhere; the node exits once they have gone, at the latest after it.
    pub drain_secs: u64,
    /// Anyone may listen to public spaces without a token.
    pub anonymous_listeners: bool,
    /// Speaker frames per second allowed on average (a 20 ms stream sends 50).
    pub speaker_max_fps: u32,
    /// Speaker frames allowed in a burst above the average.
    pub speaker_burst: u32,
    /// Listeners this node admits at once, all spaces together; beyond, joiners queue.
    pub max_listeners: usize,
    /// Joins admitted per second; beyond, joiners queue.
    pub joins_per_second: u32,
    /// Joins admitted at once above that rate.
    pub join_burst: u32,
    /// Requests per second from one address (average), and its burst.
    pub requests_per_ip: u32,
    /// Burst of requests from one address.
    pub request_burst_per_ip: u32,
    /// Requests per second from one /24 (IPv6: /64).
    pub requests_per_subnet: u32,
    /// Burst of requests from one subnet.
    pub request_burst_per_subnet: u32,
    /// Joins per second from one address (a person joins rarely; scripts do not), and burst.
    pub joins_per_ip: u32,
    /// Burst of joins from one address.
    pub join_burst_per_ip: u32,
    /// Joins per second with one identity's token, and burst.
    pub joins_per_identity: u32,
    /// Burst of joins with one identity's token.
    pub join_burst_per_identity: u32,
    /// Addresses of trusted caches and proxies (e.g. the nginx edge in front of HLS): exempt
    /// from per-address and per-subnet limits, which they would otherwise hit for everyone.
    pub trusted_proxies: townhall_shield::TrustedProxies,
    /// Connections from `trusted_proxies` start with a PROXY protocol header (v1 or v2), which
    /// names the client (for TCP load balancers that cannot add X-Forwarded-For).
    pub proxy_protocol: bool,
    /// Who may frame the page (the CSP `frame-ancestors` source list): `'none'` by default;
    /// e.g. `'self' https://blog.example.com` to embed the player elsewhere.
    pub frame_ancestors: String,
    /// Who may frame the embeddable player (`/embed/{space}`), a CSP `frame-ancestors` source
    /// list like `frame_ancestors`: `*` by default (any site may embed a public space's
    /// player); every other page keeps `frame_ancestors`.
    pub embed_frame_ancestors: String,
    /// The contact address given as `itunes:email` of the podcast feeds' owner (unset: none;
    /// Apple uses it to verify who owns a feed).
    pub feed_owner_email: Option<String>,
    /// Listening connections (WebSocket and Ogg) one token identity may hold at once.
    pub listens_per_identity: u32,
    /// Open connections from one address.
    pub max_connections_per_ip: u32,
    /// Open connections from one /24 (IPv6: /64).
    pub max_connections_per_subnet: u32,
    /// Leading zero bits of the proof of work anonymous joiners must show when operators ask
    /// for it (about 2^n hashes: 16 takes a browser a second or two).
    pub pow_difficulty: u8,
    /// Adaptive admission: above this smoothed event-loop lag (ms), the node admits nobody new
    /// until it recovers (0 disables).
    pub overload_lag_ms: u64,
    /// Largest JSON request body, bytes.
    pub max_body_bytes: usize,
    /// Lifetime of the listener tickets `join` hands out, seconds.
    pub ticket_ttl_secs: u64,
    /// UDP address for WebRTC media, sessions multiplexed on it (default: the `listen`
    /// address's IP, any free port). With N RTC threads and a fixed port P, thread `i` binds
    /// P + i (open P to P + N - 1); with port 0 each thread binds a free port.
    pub webrtc_udp: Option<SocketAddr>,
    /// Addresses to advertise to WebRTC peers as host candidates, with the UDP port (default:
    /// the bound address; set the public address when the node is behind NAT).
    pub webrtc_advertise: Vec<std::net::IpAddr>,
    /// WebRTC sessions (WHIP and WHEP together) this node holds at once, over all RTC threads.
    pub webrtc_max_sessions: usize,
    /// RTC threads, each with its own UDP socket (port) and share of the sessions (default: one
    /// per core, at most [`DEFAULT_WEBRTC_THREADS_CAP`]).
    pub webrtc_threads: Option<usize>,
    /// WebRTC sessions one identity (with a token) or one address (without) may hold at once.
    pub webrtc_sessions_per_client: usize,
    /// Webhook receivers: every event is POSTed, signed, to each (`http://` only; empty: off).
    pub webhook_urls: Vec<String>,
    /// Webhook events queued for delivery; when full, the oldest is dropped.
    pub webhook_queue: usize,
    /// Attempts per event and receiver (the first included) before it is dropped.
    pub webhook_max_attempts: u32,
    /// Delay before the first webhook retry, ms; it doubles with each failure, up to 60 s.
    pub webhook_retry_base_ms: u64,
    /// A recording stops by itself after this long, seconds (it is finished like any other).
    pub recording_max_secs: u64,
    /// A recording stops by itself at this size, bytes.
    pub recording_max_bytes: u64,
    /// Finished recordings kept on disk, all together, bytes: the oldest are deleted beyond.
    pub recordings_disk_budget: u64,
    /// Finished recordings older than this many days are deleted (0: kept until the budget).
    pub recording_retention_days: u64,
    /// Clips kept on disk, all together, bytes: the oldest are deleted to make room beyond.
    pub clips_disk_budget: u64,
    /// Clips kept at most (0: nobody may make clips on this node); the oldest go beyond.
    pub clips_max: u64,
    /// Reports, and moderation log entries, kept in the database (each; the newest): a bound on
    /// what a crowd of fresh identities can make the disk hold.
    pub retention_rows: u64,
    /// Recordings are flushed and synced to disk at least this often, ms (20 to 2000): the most
    /// audio a crash can lose.
    pub recording_sync_ms: u64,
    /// This node's part in a cluster (`all`: a node on its own, needing nothing else).
    pub role: NodeRole,
    /// Redis, where the nodes of a cluster meet: `redis://host:port/`, or the master a set of
    /// Sentinels names, `redis+sentinel://host:26379,host:26379/service`; needed by `origin`
    /// and `edge` nodes.
    pub redis: Option<String>,
    /// This node's name in the cluster (default: a random one at each start).
    pub node_id: Option<String>,
    /// Mixer threads (unset: one per core). Each space runs on one of them, its 20 ms clock
    /// unchanged; a new space goes to the least loaded (counting spaces and speakers).
    pub mixer_threads: Option<usize>,
    /// Caption every space that goes live (while `captions_max_spaces` allows); hosts can turn
    /// captions on and off per space either way.
    pub captions: bool,
    /// The speech-to-text worker: `builtin:whisper` (Whisper tiny.en through faster-whisper,
    /// the default), `builtin:pocketsphinx`, or a command line speaking the captions worker
    /// protocol (`docs/protocol.md`), split on white space.
    pub captions_engine: String,
    /// Spaces captioned at once at most (unset: one per core; 0: captions off on this node).
    pub captions_max_spaces: Option<usize>,
    /// TLS on the listen address: `off` (plain HTTP, the default), `files` (the PEM files of
    /// `tls_cert` and `tls_key`, reloaded when they change or on SIGHUP) or `acme`
    /// (certificates for `acme_domains` from an ACME certificate authority, TLS-ALPN-01 on the
    /// listen address, which must then be port 443 as the CA sees it). With TLS on, the
    /// address speaks only TLS.
    pub tls: TlsMode,
    /// The certificate chain, PEM (leaf first), for `tls = "files"`.
    pub tls_cert: Option<PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1), for `tls = "files"`.
    pub tls_key: Option<PathBuf>,
    /// With TLS on: also listen here for plain HTTP and redirect every request to HTTPS (308),
    /// e.g. `0.0.0.0:80`.
    pub tls_redirect: Option<SocketAddr>,
    /// The names certificates are requested for, with `tls = "acme"`.
    pub acme_domains: Vec<String>,
    /// Contact for the ACME account, e.g. `mailto:ops@example.com` (optional).
    pub acme_contact: Option<String>,
    /// The ACME directory (default: Let's Encrypt's production directory).
    pub acme_directory: String,
    /// A PEM file of extra roots trusted when talking to the ACME directory (a private or test
    /// CA such as pebble); unset: the public Web PKI roots.
    pub acme_ca: Option<PathBuf>,
    /// A PEM file of extra CA certificates trusted for the node's outgoing HTTPS and WSS (other
    /// nodes of its cluster, webhook receivers), beside the public Web PKI's roots.
    pub tls_client_ca: Option<PathBuf>,
}

/// Whether and how the listen address speaks TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP (loopback, or behind a TLS-terminating proxy or CDN).
    #[default]
    Off,
    /// A certificate and key from PEM files (`tls_cert`, `tls_key`).
    Files,
    /// Certificates from an ACME certificate authority (`acme_domains`).
    Acme,
}

/// Let's Encrypt's production ACME directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A node's part in a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// One node that does everything, on its own (no Redis).
    #[default]
    All,
    /// Owns its spaces' mixers, speakers, rooms and recordings, and says so in Redis.
    Origin,
    /// Serves listeners: relays each space it carries once from the space's origin.
    Edge,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("townhall-data"),
            database: false,
            host_absent_end_secs: 600,
            stats_bucket_secs: 10,
            demo: true,
            public_url: None,
            api_key: None,
            api_secret: None,
            webhook_secret: None,
            max_spaces: 100,
            stage_seats: townhall_core::Stage::DEFAULT_SEATS,
            bitrate: 32_000,
            ogg_page_ms: 200,
            ogg_burst_ms: 1_000,
            ws_batch_frames: 1,
            stall_timeout_secs: 10,
            header_timeout_secs: 10,
            socket_send_buffer: None,
            drain_secs: 10,
            anonymous_listeners: true,
            speaker_max_fps: 60,
            speaker_burst: 25,
            max_listeners: 50_000,
            joins_per_second: 5_000,
            join_burst: 10_000,
            requests_per_ip: 20,
            request_burst_per_ip: 60,
            requests_per_subnet: 500,
            request_burst_per_subnet: 2_000,
            joins_per_ip: 2,
            join_burst_per_ip: 20,
            joins_per_identity: 1,
            join_burst_per_identity: 10,
            trusted_proxies: townhall_shield::TrustedProxies::none(),
            proxy_protocol: false,
            frame_ancestors: "'none'".into(),
            embed_frame_ancestors: "*".into(),
            feed_owner_email: None,
            listens_per_identity: 4,
            max_connections_per_ip: 256,
            max_connections_per_subnet: 4_096,
            pow_difficulty: 16,
            overload_lag_ms: 25,
            max_body_bytes: 16 * 1024,
            ticket_ttl_secs: 3_600,
            webrtc_udp: None,
            webrtc_advertise: Vec::new(),
            webrtc_max_sessions: 5_000,
            webrtc_threads: None,
            webrtc_sessions_per_client: 4,
            webhook_urls: Vec::new(),
            webhook_queue: 1_000,
            webhook_max_attempts: 8,
            webhook_retry_base_ms: 1_000,
            retention_rows: DEFAULT_RETENTION_ROWS,
            recording_max_secs: 12 * 3_600,
            recording_max_bytes: 1 << 30,
            recordings_disk_budget: 20 << 30,
            recording_retention_days: 0,
            clips_disk_budget: 1 << 30,
            clips_max: 10_000,
            role: NodeRole::All,
            redis: None,
            node_id: None,
            mixer_threads: None,
            recording_sync_ms: 1_000,
            captions: false,
            captions_engine: "builtin:whisper".to_owned(),
            captions_max_spaces: None,
            tls: TlsMode::Off,
            tls_cert: None,
            tls_key: None,
            tls_redirect: None,
            acme_domains: Vec::new(),
            acme_contact: None,
            acme_directory: LETS_ENCRYPT_DIRECTORY.to_owned(),
            acme_ca: None,
            tls_client_ca: None,
        }
    }
}

/// The most RTC threads a node starts (`webrtc_threads`).
pub const MAX_WEBRTC_THREADS: usize = 256;
/// RTC threads by default: one per core, but no more than this (each has its own UDP port).
pub const DEFAULT_WEBRTC_THREADS_CAP: usize = 16;

/// The most mixer threads a node starts (`mixer_threads`).
pub const MAX_MIXER_THREADS: usize = 1_024;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Rows of reports and of the moderation log kept by default, each; older ones are deleted as
/// new ones arrive (a report is at most ~2 KiB, so this bounds the tables to a few hundred MiB
/// however many identities file them).
pub const DEFAULT_RETENTION_ROWS: u64 = 100_000;

/// Checks a receiver URL: `http://host[:port]/path` or `https://...` (checked against the Web
/// PKI and `tls_client_ca`).
pub fn parse_webhook_url(url: &str) -> Result<axum::http::Uri, String> {
    let uri: axum::http::Uri =
        url.parse().map_err(|e| format!("webhook URL {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("webhook URL {url:?} must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("webhook URL {url:?} has no host"));
    }
    Ok(uri)
}

/// Checks `public_url`: `http://` or `https://`, a host (and port), nothing after but one `/`;
/// returns it without the trailing slash. It is written into feeds and pages, so nothing that
/// would need escaping in a URL gets in.
pub fn parse_public_url(url: &str) -> Result<String, String> {
    let base = url.strip_suffix('/').unwrap_or(url);
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| format!("public_url {url:?} must start with http:// or https://"))?;
    let authority_ok = !rest.is_empty()
        && rest.len() <= 255
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !authority_ok || rest.parse::<axum::http::uri::Authority>().is_err() {
        return Err(format!(
            "public_url {url:?} must be http(s)://host[:port] with no path, query or user"
        ));
    }
    Ok(base.to_owned())
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks ranges that would otherwise fail later or silently misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.ogg_page_ms < 20 || self.ogg_page_ms > 1_000 || !self.ogg_page_ms.is_multiple_of(20)
        {
            return bad("ogg_page_ms must be a multiple of 20 between 20 and 1000");
        }
        if !(1..=50).contains(&self.ws_batch_frames) {
            return bad("ws_batch_frames must be 1 to 50");
        }
        if !(6_000..=256_000).contains(&self.bitrate) {
            return bad("bitrate must be 6000 to 256000");
        }
        if !(1..=3_600).contains(&self.stats_bucket_secs) {
            return bad("stats_bucket_secs must be 1 to 3600");
        }
        if self.stage_seats == 0 || self.max_spaces == 0 {
            return bad("stage_seats and max_spaces must be at least 1");
        }
        for (name, secret) in
            [("api_secret", &self.api_secret), ("webhook_secret", &self.webhook_secret)]
        {
            if secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_LEN) {
                return Err(ConfigError::Invalid(format!("{name} must be at least 16 bytes")));
            }
        }
        for url in &self.webhook_urls {
            parse_webhook_url(url).map_err(ConfigError::Invalid)?;
        }
        if self.webhook_queue == 0 || self.webhook_max_attempts == 0 {
            return bad("webhook_queue and webhook_max_attempts must be at least 1");
        }
        if !(1..=60_000).contains(&self.webhook_retry_base_ms) {
            return bad("webhook_retry_base_ms must be 1 to 60000");
        }
        for (name, list) in [
            ("frame_ancestors", &self.frame_ancestors),
            ("embed_frame_ancestors", &self.embed_frame_ancestors),
        ] {
            if list.trim().is_empty()
                || list.chars().any(|c| c.is_control() || c == ';' || c == ',')
            {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be a CSP source list (e.g. 'none', 'self' or *)"
                )));
            }
        }
        if let Some(url) = &self.public_url {
            parse_public_url(url).map_err(ConfigError::Invalid)?;
        }
        if let Some(email) = &self.feed_owner_email {
            let (user, domain) = email.split_once('@').unwrap_or(("", ""));
            if user.is_empty()
                || domain.is_empty()
                || email.len() > 254
                || email.chars().any(|c| c.is_control() || c.is_whitespace() || "<>\"'".contains(c))
            {
                return bad("feed_owner_email must be an e-mail address");
            }
        }
        if self.recording_max_secs == 0 || self.recording_max_bytes == 0 {
            return bad("recording_max_secs and recording_max_bytes must be at least 1");
        }
        if !(20..=2_000).contains(&self.recording_sync_ms) {
            return bad("recording_sync_ms must be 20 to 2000");
        }
        match (&self.role, &self.redis) {
            (NodeRole::All, _) => {}
            (_, None) => {
                return bad("role origin and edge need redis (e.g. redis://127.0.0.1:6379/)");
            }
            (_, Some(url)) => {
                if let Err(e) = crate::app::cluster::target::RedisTarget::parse(url) {
                    return Err(ConfigError::Invalid(e.to_string()));
                }
            }
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return bad("node_id must be 1 to 64 letters, digits, '-' or '_'");
        }
        if self.mixer_threads.is_some_and(|n| !(1..=MAX_MIXER_THREADS).contains(&n)) {
            return bad("mixer_threads must be 1 to 1024");
        }
        if self.webrtc_threads.is_some_and(|n| !(1..=MAX_WEBRTC_THREADS).contains(&n)) {
            return bad("webrtc_threads must be 1 to 256");
        }
        if self.captions_engine.split_whitespace().next().is_none() {
            return bad("captions_engine must name a command (or builtin:whisper)");
        }
        if self.captions_max_spaces.is_some_and(|n| n > 1_024) {
            return bad("captions_max_spaces must be 0 to 1024");
        }
        self.validate_tls()
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        match self.tls {
            TlsMode::Off if self.tls_redirect.is_some() => {
                return bad("tls_redirect needs tls = \"files\" or \"acme\"");
            }
            TlsMode::Off => {}
            TlsMode::Files if self.tls_cert.is_none() || self.tls_key.is_none() => {
                return bad("tls = \"files\" needs tls_cert and tls_key (PEM files)");
            }
            TlsMode::Files => {}
            TlsMode::Acme => {
                if self.acme_domains.is_empty() {
                    return bad("tls = \"acme\" needs acme_domains (the names to certify)");
                }
                let name_ok = |d: &String| {
                    !d.is_empty()
                        && d.len() <= 253
                        && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                };
                if !self.acme_domains.iter().all(name_ok) {
                    return bad("acme_domains must be DNS names (letters, digits, '-' and '.')");
                }
                if !self.acme_directory.starts_with("https://") {
                    return bad("acme_directory must be an https:// URL");
                }
            }
        }
        if self.tls_redirect.is_some_and(|a| a == self.listen) {
            return bad("tls_redirect must differ from listen");
        }
        Ok(())
    }

    /// Whether the listen address speaks TLS.
    pub fn tls_on(&self) -> bool {
        self.tls != TlsMode::Off
    }

    /// The URL this node is reached at: `public_url`, else `http(s)://` and the bound address.
    pub fn url_for(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_on() { "https" } else { "http" };
        self.public_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"))
    }

    /// Spaces this node captions at once: `captions_max_spaces`, or one per core (a space
    /// talking without a pause takes about a quarter of a core: `bench/results/captions.md`).
    pub fn captions_slots(&self) -> usize {
        self.captions_max_spaces.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Mixer threads to start: `mixer_threads`, or one per core the process may use.
    pub fn mixer_thread_count(&self) -> usize {
        self.mixer_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// RTC threads to start: `webrtc_threads`, or one per core the process may use (at most
    /// [`DEFAULT_WEBRTC_THREADS_CAP`]).
    pub fn webrtc_thread_count(&self) -> usize {
        self.webrtc_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(DEFAULT_WEBRTC_THREADS_CAP)
        })
    }

    /// The WebRTC side's settings.
    pub fn rtc(&self) -> crate::pipeline::rtc::RtcSettings {
        crate::pipeline::rtc::RtcSettings {
            udp: self.webrtc_udp.unwrap_or(SocketAddr::new(self.listen.ip(), 0)),
            advertise: self.webrtc_advertise.clone(),
            max_sessions: self.webrtc_max_sessions,
            sessions_per_client: self.webrtc_sessions_per_client,
            threads: self.webrtc_thread_count(),
        }
    }

    /// Frames per Ogg page.
    pub fn ogg_page_frames(&self) -> usize {
        (self.ogg_page_ms / townhall_media::FRAME_MS) as usize
    }

    /// Pages of recent audio a new Ogg listener receives.
    pub fn ogg_burst_pages(&self) -> usize {
        self.ogg_burst_ms.div_ceil(self.ogg_page_ms.max(1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        let text = toml::to_string(&c).expect("serialise");
        assert_eq!(toml::from_str::<Config>(&text).expect("parse"), c);
    }

    #[test]
    fn files_override_defaults_and_unknown_keys_fail() {
        let c: Config = toml::from_str("ogg_page_ms = 1000\ndemo = false").expect("parse");
        assert_eq!((c.ogg_page_ms, c.demo, c.bitrate), (1000, false, 32_000));
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }

    #[test]
    fn public_urls_lose_a_trailing_slash() {
        assert_eq!(
            parse_public_url("https://live.example.com/"),
            Ok("https://live.example.com".into())
        );
        assert_eq!(parse_public_url("http://[::1]:8080"), Ok("http://[::1]:8080".into()));
        let c = Config {
            public_url: Some("https://live.example.com".into()),
            feed_owner_email: Some("ops@example.com".into()),
            embed_frame_ancestors: "https://blog.example.com".into(),
            ..Config::default()
        };
        c.validate().expect("valid");
    }

    #[test]
    fn captions_are_off_by_default_and_their_settings_checked() {
        let c: Config = toml::from_str(
            "captions = true\ncaptions_engine = \"builtin:pocketsphinx\"\ncaptions_max_spaces = 3",
        )
        .expect("parse");
        assert!(c.captions && c.captions_slots() == 3);
        c.validate().expect("valid");
        let d = Config::default();
        assert!(!d.captions && d.captions_engine == "builtin:whisper");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(d.captions_slots(), cores);
        for bad in [
            Config { captions_engine: "  ".into(), ..Config::default() },
            Config { captions_max_spaces: Some(1_025), ..Config::default() },
        ] {
            assert!(bad.validate().is_err());
        }
    }

    #[test]
    fn tls_is_off_by_default_and_each_mode_names_what_it_needs() {
        let d = Config::default();
        assert!(!d.tls_on());
        assert_eq!(d.url_for(d.listen), "http://127.0.0.1:8080");
        let files: Config = toml::from_str(
            "tls = \"files\"\ntls_cert = \"/etc/ssl/c.pem\"\ntls_key = \"/etc/ssl/k.pem\"\n\
             tls_redirect = \"0.0.0.0:80\"",
        )
        .expect("parse");
        files.validate().expect("valid");
        assert_eq!(files.url_for(files.listen), "https://127.0.0.1:8080");
        let acme: Config =
            toml::from_str("tls = \"acme\"\nacme_domains = [\"live.example.com\"]").expect("parse");
        acme.validate().expect("valid");
        assert_eq!(acme.acme_directory, LETS_ENCRYPT_DIRECTORY);
    }

    #[test]
    fn mixer_threads_default_to_the_cores() {
        let c: Config = toml::from_str("mixer_threads = 3").expect("parse");
        assert_eq!(c.mixer_thread_count(), 3);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(Config::default().mixer_thread_count(), cores);
    }

    #[test]
    fn webrtc_threads_default_to_the_cores_capped() {
        let c: Config = toml::from_str("webrtc_threads = 2").expect("parse");
        assert_eq!((c.webrtc_thread_count(), c.rtc().threads), (2, 2));
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let default = Config::default().webrtc_thread_count();
        assert_eq!(default, cores.min(DEFAULT_WEBRTC_THREADS_CAP));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for c in [
            Config { ogg_page_ms: 30, ..Config::default() },
            Config { ws_batch_frames: 0, ..Config::default() },
            Config { webrtc_threads: Some(0), ..Config::default() },
            Config { webrtc_threads: Some(MAX_WEBRTC_THREADS + 1), ..Config::default() },
            Config { api_secret: Some("short".into()), ..Config::default() },
            Config { webhook_urls: vec!["ftp://example.com/hook".into()], ..Config::default() },
            Config { webhook_queue: 0, ..Config::default() },
            Config { recording_sync_ms: 2_001, ..Config::default() },
            Config { embed_frame_ancestors: "* ; script-src *".into(), ..Config::default() },
            Config { embed_frame_ancestors: " ".into(), ..Config::default() },
            Config { public_url: Some("ftp://example.com".into()), ..Config::default() },
            Config { public_url: Some("https://example.com/x".into()), ..Config::default() },
            Config { public_url: Some("https://a@example.com".into()), ..Config::default() },
            Config { public_url: Some("https://exa\"mple.com".into()), ..Config::default() },
            Config { feed_owner_email: Some("not an address".into()), ..Config::default() },
            Config { feed_owner_email: Some("a@b\"<x>".into()), ..Config::default() },
            Config { mixer_threads: Some(0), ..Config::default() },
            Config { mixer_threads: Some(MAX_MIXER_THREADS + 1), ..Config::default() },
            Config { tls: TlsMode::Files, tls_cert: Some("c.pem".into()), ..Config::default() },
            Config { tls: TlsMode::Acme, ..Config::default() },
            Config {
                tls: TlsMode::Acme,
                acme_domains: vec!["bad name".into()],
                ..Config::default()
            },
            Config {
                tls_redirect: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
                ..Config::default()
            },
        ] {
            assert!(c.validate().is_err());
        }
    }
}
