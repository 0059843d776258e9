//! The Townhall server: HTTP API, WebSocket and Ogg egress, WebSocket ingest, web page, metrics.
//!
//! The binary (`townhall`) is a thin command line over [`start`]; tests start servers in-process
//! the same way.

pub mod app;
pub mod clock;
pub mod http;
pub mod metrics;
pub mod pipeline;

// The paths embedders, tests and tools use.
pub use app::{config, credentials, demo, store};
pub use http::{room, serve};
pub use pipeline::net;

use app::{error as app_error, recorder, state};
use http::{
    api, embed, error, feeds, headers, hls, oembed, ogg_http, recordings, reports, web, whip, ws,
};
use pipeline::{engine, rtc};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use townhall_core::{Claims, Identity, Role, SpaceScope};

pub use config::Config;
use error::ApiError;
use state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The listen address could not be bound, or the engine thread not started.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC side could not start.
    #[error(transparent)]
    Rtc(#[from] rtc::RtcStartError),
    /// The demo space could not be created.
    #[error("demo: {}", .0.message)]
    Demo(app_error::AppError),
    /// Spaces stored before the last stop could not be brought back.
    #[error("restoring spaces: {}", .0.message)]
    Restore(app_error::AppError),
    /// The metadata database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A token could not be minted.
    #[error("token: {0}")]
    Token(#[from] townhall_core::TokenError),
    /// No usable key pair (see [`credentials`]).
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    /// The TLS certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] app::tls::TlsError),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    app: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    host_token: String,
    credentials: credentials::Source,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Builds the router over shared state.
pub fn router(app: Arc<AppState>) -> Router {
    let limit = app.config.max_body_bytes;
    Router::new()
        .merge(api::routes())
        .route("/ws/{id}", get(ws::handler))
        .route("/hls/{id}/{file}", get(hls::handler))
        .route("/live/{file}", get(ogg_http::routed).fallback(ogg_http::other))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(room::routes())
        .merge(recordings::routes())
        .merge(http::captions::routes())
        .merge(http::clips::routes())
        .merge(feeds::routes())
        .merge(embed::routes())
        .merge(oembed::routes())
        .merge(reports::routes())
        .merge(http::stats::routes())
        .merge(whip::routes())
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(
                headers::SecurityHeaders::new(&app.config.frame_ancestors).in_cluster(app.clone()),
            ),
            headers::add,
        ))
        .layer(axum::middleware::from_fn_with_state(app.clone(), serve::rate_limit))
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .with_state(app)
}

/// Starts a server: binds, starts the media engine and (if configured) the demo space.
pub async fn start(config: Config) -> Result<Server, StartError> {
    config.validate()?;
    let credentials = credentials::resolve(&config)?;
    // Certificates first: a node that cannot serve TLS as configured does not start.
    let certificate = match config.tls {
        config::TlsMode::Files => {
            let (cert, key) = (config.tls_cert.as_deref(), config.tls_key.as_deref());
            let (Some(cert), Some(key)) = (cert, key) else {
                unreachable!("validate() checked tls_cert and tls_key")
            };
            Some(Arc::new(app::tls::ReloadingCert::load(cert, key)?))
        }
        _ => None,
    };
    let listener = net::bind(config.listen, config.socket_send_buffer)?;
    let addr = listener.local_addr()?;
    // The recorder first: the mixer and WebRTC threads take their counters as they start, and
    // a counter taken before it is installed counts into nothing.
    let metrics = metrics::handle();
    let engine = engine::Engine::start(config.mixer_thread_count())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let rtc = rtc::RtcNode::start(&config.rtc(), shutdown_rx.clone())?;
    let store = Arc::new(if config.database {
        store::Store::open(&config.data_dir)?
    } else {
        store::Store::in_memory()?
    });
    store.set_retention(config.retention_rows);
    let app =
        Arc::new(AppState::new(config, &credentials, engine, rtc, store, shutdown_rx, metrics)?);
    if app.config.captions {
        tokio::spawn(app.clone().check_captions_engine());
    }
    app.restore().map_err(StartError::Restore)?;
    // Recordings a crash interrupted are finalised before anyone can ask for them.
    let (data_dir, store, webhooks) =
        (app.config.data_dir.clone(), app.store.clone(), app.webhooks.clone());
    tokio::task::spawn_blocking(move || recorder::recover(&data_dir, &store, &webhooks))
        .await
        .map_err(std::io::Error::other)?;
    // An edge carries the spaces of origins; it has no demo of its own.
    if app.config.demo && app.config.role != config::NodeRole::Edge {
        demo::start(&app).await.map_err(StartError::Demo)?;
    }
    let host = Identity::new("host").unwrap_or_else(|_| unreachable!("valid identity"));
    // The start-up token is the operator's: every space and the admin API.
    let operator = Claims {
        op: true,
        ..Claims::new(
            app.keys.api_key(),
            host,
            Role::Host,
            SpaceScope::Any,
            clock::now_unix(),
            86_400,
        )
    };
    let host_token = app.keys.mint_claims(operator)?;
    tokio::spawn(evaluate_traffic(app.clone(), shutdown_tx.subscribe()));
    tokio::spawn(measure_lag(app.clone(), shutdown_tx.subscribe()));
    tokio::spawn(sweep_recordings(app.clone(), shutdown_tx.subscribe()));
    tokio::spawn(sync_transcripts(app.clone(), shutdown_tx.subscribe()));
    tokio::spawn(sync_stats(app.clone(), shutdown_tx.subscribe()));
    let url = app.config.url_for(addr);
    tokio::spawn(app::cluster::run(app.clone(), url, shutdown_tx.subscribe()));
    let tls = match (certificate, app.config.tls) {
        (Some(cert), _) => {
            tokio::spawn(cert.clone().watch(shutdown_tx.subscribe()));
            Some(app::tls::server_config(cert, None)?)
        }
        (None, config::TlsMode::Acme) => {
            let resolver = app::tls::acme(&app.config, shutdown_tx.subscribe())?;
            Some(app::tls::server_config(resolver, Some(app::tls::ACME_ALPN))?)
        }
        (None, _) => None,
    };
    let tls = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    if let Some(redirect) = app.config.tls_redirect {
        let listener = net::bind(redirect, None)?;
        tokio::spawn(http::redirect::serve(listener, addr.port(), shutdown_tx.subscribe()));
    }
    let task = tokio::spawn(serve::serve(
        listener,
        tls,
        app.clone(),
        router(app.clone()),
        shutdown_tx.subscribe(),
    ));
    Ok(Server {
        addr,
        app,
        shutdown: shutdown_tx,
        task,
        host_token,
        credentials: credentials.source,
    })
}

impl Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL the node is reached at (`public_url`, else `http(s)://` and the bound address).
    pub fn url(&self) -> String {
        self.app.config.url_for(self.addr)
    }

    /// An operator token (host role, every space, the admin API), valid for a day; printed at
    /// start-up on loopback.
    pub fn host_token(&self) -> &str {
        &self.host_token
    }

    /// Where the node's key pair came from (configured, or generated for this install).
    pub fn credentials(&self) -> &credentials::Source {
        &self.credentials
    }

    /// Shared state, for tests and embedding.
    pub fn state(&self) -> &Arc<AppState> {
        &self.app
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.task).await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Drains: stops admitting (and stops being offered by the cluster's door), sends listeners
    /// off to reconnect elsewhere evenly over `drain_secs`, finishes recordings, then stops as
    /// soon as nobody listens any more or the window is over (open HTTP exchanges get
    /// [`FINAL_GRACE`] more).
    pub async fn shutdown(self) {
        let window = Duration::from_secs(self.app.config.drain_secs);
        let until = tokio::time::Instant::now() + window;
        self.app.begin_drain(until);
        tracing::info!(?window, listeners = self.app.total_listeners(), "draining");
        recorder::finish_all(&self.app).await;
        until_listeners_left(&self.app, until).await;
        // The audience's last minutes are kept (a restart carries on from them).
        let _ = self
            .app
            .blocking(|app| {
                app.save_stats();
                Ok::<_, app_error::AppError>(())
            })
            .await;
        let _ = self.shutdown.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(FINAL_GRACE, self.task).await.is_err() {
            tracing::warn!("drain deadline reached; closing remaining connections");
            abort.abort();
        }
    }
}

/// How long open HTTP exchanges get to finish once a drain's window is over.
pub const FINAL_GRACE: Duration = Duration::from_secs(2);

/// Waits until nobody listens here any more, or `until`.
async fn until_listeners_left(app: &AppState, until: tokio::time::Instant) {
    while tokio::time::Instant::now() < until && app.total_listeners() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every second: re-evaluates the crowd-or-attack verdict (it logs and reports changes),
/// broadcasts each space's reaction tallies of the past seconds, ends spaces left without a
/// host for the grace period, keeps each mixed space's program clock when it moved, and folds the histograms' samples into their summaries (else a
/// node nobody scrapes would keep every mixer tick's lag).
async fn evaluate_traffic(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                app.shield.evaluate();
                app.metrics.run_upkeep();
                let now = clock::now_unix();
                app.live_spaces().iter().for_each(|live| live.flush_reactions(now));
                // Ending spaces and retrying writes touch the database.
                let _ = app.blocking(move |app| {
                    app.end_abandoned(now);
                    app.retry_unsaved();
                    app.keep_clocks();
                    Ok::<_, app_error::AppError>(())
                })
                .await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Every few seconds: writes the transcripts of recordings in progress as far as they go (on
/// the blocking pool: it touches the database).
async fn sync_transcripts(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app::captions::TRANSCRIPT_SYNC);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = app.blocking(|app| {
                    app.sync_transcripts();
                    Ok::<_, app_error::AppError>(())
                })
                .await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Every [`app::stats::STATS_SYNC`]: writes each live space's audience statistics (on the
/// blocking pool: it touches the database), so a crash loses at most that much of them; a
/// drain writes them once more.
async fn sync_stats(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(app::stats::STATS_SYNC);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = app.blocking(|app| {
                    app.save_stats();
                    Ok::<_, app_error::AppError>(())
                })
                .await;
            }
            // A drain saves them one last time (`Server::shutdown`).
            _ = shutdown.changed() => return,
        }
    }
}

/// At start and every ten minutes: deletes recordings past their retention or beyond the disk
/// budget, and clips beyond theirs (on the blocking pool: it touches the disk and the database).
async fn sweep_recordings(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let c = &app.config;
                    recorder::sweep(&c.data_dir, &app.store, c.recordings_disk_budget, c.recording_retention_days, clock::now_unix());
                    crate::app::clips::sweep(&c.data_dir, &app.store, c.clips_max, c.clips_disk_budget)
                })
                .await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Measures how late a 100 ms timer fires on the async workers (event-loop lag) and feeds the
/// shield's pressure gauge, which stops admissions while the node is overloaded.
async fn measure_lag(app: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    const PERIOD: Duration = Duration::from_millis(100);
    loop {
        let start = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {
                app.shield.observe_lag(start.elapsed().saturating_sub(PERIOD));
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn metrics_text(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    if app.is_draining() {
        ApiError::draining().into_response()
    } else if app.unsaved() > 0 {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_behind",
            "the database refused writes of space states; retrying",
        )
        .into_response()
    } else {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
