//! `townhall`: serve spaces, or mint tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use townhall_core::{Claims, Identity, Role, SpaceScope, TokenKeys};
use townhall_server::config::{self, NodeRole};
use townhall_server::credentials::{self, Source};
use townhall_server::{Config, clock};

/// Townhall: live audio spaces that stay on air through flash crowds and attacks.
#[derive(Debug, Parser)]
#[command(name = "townhall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, metadata in ./townhall-data, demo space on).
    Serve(ServeArgs),
    /// Print an access token (HS256 JWT) signed with the node's key pair (TOWNHALL_API_KEY /
    /// TOWNHALL_API_SECRET, or the pair generated for this install in the data directory).
    Token(TokenArgs),
    /// Check a configuration file (with the environment's overrides, as `serve` would read
    /// it): prints what the node would run with, or why it would refuse; exit status 1 on error.
    CheckConfig(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The TOML configuration file to check.
    #[arg(long, env = "TOWNHALL_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, message and fields), for log
    /// collectors.
    Json,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TOWNHALL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Do not create the demo space.
    #[arg(long)]
    no_demo: bool,
    /// TOML configuration file (flags and environment override it).
    #[arg(long, env = "TOWNHALL_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for recordings and the metadata database (default ./townhall-data).
    #[arg(long, env = "TOWNHALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep spaces, bans, reports and the recordings index in memory only (without a config
    /// file the database in the data directory is on; with one, its `database` key decides).
    #[arg(long)]
    in_memory: bool,
    /// Print an operator token at start-up even when not listening on loopback (it is printed
    /// on loopback anyway): it can do anything on this node, so logs must be private.
    #[arg(long)]
    print_host_token: bool,
    /// Secret signing webhook deliveries (default: generated and kept in the data directory).
    #[arg(long, env = "TOWNHALL_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// This node's part in a cluster: all (on its own), origin or edge.
    #[arg(long, env = "TOWNHALL_ROLE", value_enum)]
    role: Option<NodeRole>,
    /// Redis where the cluster's nodes meet (redis://host:port/, or
    /// redis+sentinel://host:26379,.../service), for origin and edge.
    #[arg(long, env = "TOWNHALL_REDIS")]
    redis: Option<String>,
    /// The URL clients and other nodes reach this node at (default http://LISTEN).
    #[arg(long, env = "TOWNHALL_PUBLIC_URL")]
    public_url: Option<String>,
    /// This node's name in the cluster (default: random at each start).
    #[arg(long, env = "TOWNHALL_NODE_ID")]
    node_id: Option<String>,
    /// On SIGTERM or Ctrl-C: seconds over which listeners are sent off to reconnect elsewhere
    /// before the node exits (a second signal exits at once).
    #[arg(long, env = "TOWNHALL_DRAIN_SECS")]
    drain_secs: Option<u64>,
    /// Mixer threads (default: one per core); each space runs on one of them.
    #[arg(long, env = "TOWNHALL_MIXER_THREADS")]
    mixer_threads: Option<usize>,
    /// RTC threads (default: one per core, at most 16); each has its own UDP port and a share
    /// of the WebRTC sessions.
    #[arg(long, env = "TOWNHALL_WEBRTC_THREADS")]
    webrtc_threads: Option<usize>,
    /// Caption every space that goes live (speech to text; see `captions_engine`).
    #[arg(long, env = "TOWNHALL_CAPTIONS")]
    captions: bool,
    /// TLS on the listen address: off, files (--tls-cert/--tls-key, reloaded on change or
    /// SIGHUP) or acme (acme_domains in the config file).
    #[arg(long, env = "TOWNHALL_TLS", value_enum)]
    tls: Option<config::TlsMode>,
    /// Certificate chain (PEM) for --tls files.
    #[arg(long, env = "TOWNHALL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls files.
    #[arg(long, env = "TOWNHALL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log lines as text or as JSON objects (filter with TOWNHALL_LOG, e.g. `info`).
    #[arg(long, env = "TOWNHALL_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// API key naming the token issuer.
    #[arg(long, env = "TOWNHALL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Secret signing tokens.
    #[arg(long, env = "TOWNHALL_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Space the token grants, or '*' for every space.
    #[arg(long)]
    space: String,
    /// Who the token names.
    #[arg(long)]
    identity: String,
    /// Role: host, cohost, speaker or listener.
    #[arg(long)]
    role: Role,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3_600)]
    ttl: u64,
    /// An operator token (needs `--space '*'`): the admin API and every space, whatever the
    /// rooms say.
    #[arg(long)]
    operator: bool,
    /// Config file to read the key pair (and data directory) from.
    #[arg(long, env = "TOWNHALL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory holding this install's generated key pair (default ./townhall-data).
    #[arg(long, env = "TOWNHALL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    keys: KeyArgs,
}

impl KeyArgs {
    /// Each of the key and the secret overrides the config file's on its own: a key from the
    /// file and a secret from the environment are both kept.
    fn apply(self, config: &mut Config) {
        if let Some(key) = self.api_key {
            config.api_key = Some(key);
        }
        if let Some(secret) = self.api_secret {
            config.api_secret = Some(secret);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::CheckConfig(args) => check_config(args),
    }
}

fn check_config(args: CheckArgs) -> anyhow::Result<()> {
    let mut config = Config::from_file(&args.config)?;
    args.keys.apply(&mut config);
    config.validate()?;
    let keys = match (&config.api_key, &config.api_secret) {
        (Some(_), Some(_)) => "given (config or environment)",
        (None, None) if config.listen.ip().is_loopback() => {
            "none given: generated for this install in the data directory at first start"
        }
        (None, None) => anyhow::bail!(
            "no api_key/api_secret: a node listening on {} (not loopback) refuses to start without \
             them (set TOWNHALL_API_KEY and TOWNHALL_API_SECRET, or the config keys)",
            config.listen
        ),
        _ => anyhow::bail!("api_key and api_secret go together: set both or neither"),
    };
    if let (config::TlsMode::Files, Some(cert), Some(key)) =
        (config.tls, &config.tls_cert, &config.tls_key)
    {
        townhall_server::app::tls::load_pair(cert, key).context("tls_cert/tls_key")?;
    }
    if let Some(ca) = &config.tls_client_ca {
        townhall_server::app::outbound::client_config(Some(ca)).context("tls_client_ca")?;
    }
    println!("{}: ok", args.config.display());
    println!("  listen:      {}", config.listen);
    println!("  role:        {:?}", config.role);
    println!("  tls:         {:?}", config.tls);
    println!("  data_dir:    {} (database {})", config.data_dir.display(), config.database);
    println!("  keys:        {keys}");
    println!("  demo space:  {}", if config.demo { "on" } else { "off" });
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    args.keys.apply(&mut config);
    config.validate()?;
    let credentials = credentials::resolve_for_tool(&config)?;
    if let Source::Generated { path, .. } = &credentials.source {
        eprintln!(
            "note: signing with the key pair generated for this install ({})",
            path.display()
        );
    }
    let keys = TokenKeys::new(credentials.api_key, credentials.api_secret.as_bytes());
    let scope = SpaceScope::try_from(args.space).context("--space")?;
    if args.operator && scope != SpaceScope::Any {
        anyhow::bail!("--operator needs --space '*'");
    }
    let identity = Identity::new(args.identity).context("--identity")?;
    let claims = Claims {
        op: args.operator,
        ..Claims::new(keys.api_key(), identity, args.role, scope, clock::now_unix(), args.ttl)
    };
    println!("{}", keys.mint_claims(claims)?);
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOWNHALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config { database: true, ..Config::default() },
    };
    if args.in_memory {
        config.database = false;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if args.no_demo {
        config.demo = false;
    }
    args.keys.apply(&mut config);
    if let Some(secret) = args.webhook_secret {
        config.webhook_secret = Some(secret);
    }
    if let Some(role) = args.role {
        config.role = role;
    }
    if let Some(secs) = args.drain_secs {
        config.drain_secs = secs;
    }
    if args.mixer_threads.is_some() {
        config.mixer_threads = args.mixer_threads;
    }
    if args.webrtc_threads.is_some() {
        config.webrtc_threads = args.webrtc_threads;
    }
    if args.captions {
        config.captions = true;
    }
    if let Some(tls) = args.tls {
        config.tls = tls;
    }
    for (value, slot) in
        [(args.tls_cert, &mut config.tls_cert), (args.tls_key, &mut config.tls_key)]
    {
        if value.is_some() {
            *slot = value;
        }
    }
    for (value, slot) in [
        (args.redis, &mut config.redis),
        (args.public_url, &mut config.public_url),
        (args.node_id, &mut config.node_id),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(config, args.print_host_token))
}

async fn run(config: Config, print_host_token: bool) -> anyhow::Result<()> {
    let loopback = config.listen.ip().is_loopback();
    let public_url = config.public_url.clone();
    let demo = config.demo;
    let mut server = townhall_server::start(config).await.context("starting server")?;
    let url = public_url.unwrap_or_else(|| server.url());
    println!("Townhall is listening on {url}");
    println!("  page:        {url}/");
    if demo {
        println!("  demo space:  {url}/#/space/{}", townhall_server::demo::DEMO_SPACE);
        println!("  Ogg stream:  {url}/live/{}.opus", townhall_server::demo::DEMO_SPACE);
    }
    if let Source::Generated { path, created } = server.credentials() {
        let how = if *created { "generated" } else { "kept" };
        println!("  keys:        {how} for this install in {}", path.display());
    }
    if loopback || print_host_token {
        println!("  operator token (all spaces, 24 h):\n{}", server.host_token());
    } else {
        println!(
            "  operator token: not printed off loopback (--print-host-token, or `townhall token --operator`)"
        );
    }
    let mut signals = Signals::new();
    tokio::select! {
        result = server.wait() => {
            result.context("server stopped")?;
        }
        _ = signals.next() => {
            tracing::info!("shutdown signal: draining (a second signal stops at once)");
            tokio::select! {
                _ = server.shutdown() => {}
                _ = signals.next() => {
                    tracing::warn!("second shutdown signal: stopping now");
                    std::process::exit(130);
                }
            }
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C), each delivery seen once: the first drains, a second ends at
/// once. The handlers are installed before the first arrives, so none is lost in between.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGTERM or SIGINT (never, if neither could be installed).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match self.int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
