//! `townhall`: serve spaces, or mint tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use townhall_core::{Identity, Role, SpaceScope, TokenKeys};
use townhall_server::{Config, clock, config};

/// Townhall: live audio spaces that stay on air through flash crowds and attacks.
#[derive(Debug, Parser)]
#[command(name = "townhall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, in-memory, demo space on).
    Serve(ServeArgs),
    /// Print an access token (HS256 JWT) signed with TOWNHALL_API_KEY / TOWNHALL_API_SECRET.
    Token(TokenArgs),
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
    #[command(flatten)]
    keys: KeyArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config {
        api_key: args.keys.api_key,
        api_secret: args.keys.api_secret,
        ..Config::default()
    };
    config.validate()?;
    let (key, secret, dev) = config.credentials();
    if dev {
        eprintln!(
            "note: TOWNHALL_API_KEY/TOWNHALL_API_SECRET unset; signing with the development pair"
        );
    }
    let keys = TokenKeys::new(key, secret.as_bytes());
    let scope = SpaceScope::try_from(args.space).context("--space")?;
    let identity = Identity::new(args.identity).context("--identity")?;
    let token = keys.mint(identity, args.role, scope, clock::now_unix(), args.ttl)?;
    println!("{token}");
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOWNHALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
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
    if args.keys.api_key.is_some() || args.keys.api_secret.is_some() {
        config.api_key = args.keys.api_key;
        config.api_secret = args.keys.api_secret;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let public_url = config.public_url.clone();
    let demo = config.demo;
    let mut server = townhall_server::start(config).await.context("starting server")?;
    let url = public_url.unwrap_or_else(|| format!("http://{}", server.addr()));
    println!("Townhall is listening on {url}");
    println!("  page:        {url}/");
    if demo {
        println!("  demo space:  {url}/#/space/{}", townhall_server::demo::DEMO_SPACE);
        println!("  Ogg stream:  {url}/live/{}.opus", townhall_server::demo::DEMO_SPACE);
    }
    println!("  host token (all spaces, 24 h):\n{}", server.host_token());
    if server.dev_credentials() {
        println!(
            "  note: using the development API key pair ({}); set TOWNHALL_API_KEY and TOWNHALL_API_SECRET in production",
            config::DEV_API_KEY
        );
    }
    tokio::select! {
        result = server.wait() => {
            result.context("server stopped")?;
        }
        _ = shutdown_signal() => {
            tracing::info!("shutdown signal: draining");
            server.shutdown().await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
