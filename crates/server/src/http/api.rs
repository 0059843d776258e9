//! The JSON API under `/api/v1`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use townhall_core::{Identity, NewSpace, Role, SpaceId, SpaceScope, TokenError, WaitPlace};
use townhall_shield::{Decision, Lane, Signal, jitter};

use crate::app::auth::Manage;
use crate::app::error::AppError;
use crate::app::state::{AppState, SpaceUrls, SpaceView, attack_mode, bearer};
use crate::clock::now_unix;
use crate::http::error::ApiError;

/// Routes of `/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces", get(list_spaces).post(create_space))
        .route("/api/v1/spaces/{id}", get(get_space))
        .route("/api/v1/spaces/{id}/start", post(start_space))
        .route("/api/v1/spaces/{id}/end", post(end_space))
        .route("/api/v1/spaces/{id}/join", post(join_space))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/admin/shield", get(shield_status).put(shield_update))
        .route("/api/v1/pow", post(pow_challenge))
}

/// Parses a space id from the path, with a JSON error for bad input.
pub fn space_id(path: Result<Path<String>, PathRejection>) -> Result<SpaceId, ApiError> {
    let Path(raw) = path?;
    SpaceId::new(raw).map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))
}

#[derive(Serialize)]
struct SpaceList {
    spaces: Vec<SpaceView>,
}

/// Query of `GET /api/v1/spaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only spaces in this state (`scheduled` lists the upcoming ones, soonest first).
    state: Option<townhall_core::SpaceState>,
}

async fn list_spaces(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SpaceList>, ApiError> {
    let Query(q) = query?;
    let mut spaces = app.list(&headers);
    if let Some(state) = q.state {
        spaces.retain(|s| s.space.state == state);
    }
    Ok(Json(SpaceList { spaces }))
}

async fn get_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SpaceView>, ApiError> {
    let id = space_id(path)?;
    Ok(Json(app.view(app.visible_space(&id, &headers)?)))
}

async fn create_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewSpace>, JsonRejection>,
) -> Result<Response, ApiError> {
    let claims = app.authorize_create(&headers)?;
    let Json(req) = body?;
    // A token scoped to one space may create exactly that space.
    if let SpaceScope::One(granted) = &claims.space
        && req.id.as_ref() != Some(granted)
    {
        return Err(ApiError::forbidden("the token grants one space; create it by that id"));
    }
    let space = app.blocking(move |app| app.create(req, claims.sub)).await?;
    let location = format!("/api/v1/spaces/{}", space.id);
    let view = app.view(space);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

async fn start_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    app.authorize_space(&headers, &id, Manage::Start)?;
    if let Some(answer) = on_origin(&app, &id, "start", &headers).await? {
        return Ok(answer);
    }
    let space = app.blocking(move |app| app.start(&id)).await?;
    Ok(Json(app.view(space)).into_response())
}

/// On an edge, starting and ending a space are its origin's to do: the request goes there
/// and its answer comes back (`None` where the space is this node's own).
async fn on_origin(
    app: &AppState,
    id: &SpaceId,
    what: &str,
    headers: &HeaderMap,
) -> Result<Option<Response>, ApiError> {
    if app.config.role != crate::app::config::NodeRole::Edge {
        return Ok(None);
    }
    let origin = app.origin_of(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "origin_unknown",
            "this edge does not know the space's origin now (the cluster's directory is away)",
        )
    })?;
    let path = format!("/api/v1/spaces/{id}/{what}");
    pass_on(app, &origin, &path, headers, None, bytes::Bytes::new()).await.map(Some)
}

async fn end_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let claims = app.authorize_space(&headers, &id, Manage::End)?;
    if let Some(answer) = on_origin(&app, &id, "end", &headers).await? {
        return Ok(answer);
    }
    let space = app
        .blocking(move |app| {
            let space = app.end(&id)?;
            app.log_end(&id, &claims.sub, None);
            Ok::<_, AppError>(space)
        })
        .await?;
    Ok(Json(app.view(space)).into_response())
}

/// What `join` returns: a listener ticket and where to use it.
#[derive(Debug, Serialize)]
pub struct JoinTicket {
    /// A signed token to present on the listening URLs (`?token=`).
    pub token: String,
    /// Who the ticket names.
    pub identity: Identity,
    /// The role it carries.
    pub role: Role,
    /// When it expires, seconds since the epoch.
    pub expires_at: u64,
    /// Where to listen.
    pub urls: SpaceUrls,
    /// In a cluster: the node to use those URLs on (the door's choice of edge); absent: this
    /// node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Query parameters of `join`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinQuery {
    /// A waiting-room ticket from an earlier `join` (come back with it when told to).
    ticket: Option<String>,
    /// A solved proof of work, `challenge:counter` (when anonymous joiners must show one).
    pow: Option<String>,
    /// In a cluster: the node the joiner could not reach or lost (its URL, as `node` named
    /// it); the door names another.
    avoid: Option<String>,
}

/// A place in the waiting room, as `join` returns it with `202 Accepted`.
#[derive(Debug, Serialize)]
pub struct Waiting {
    /// Present it as `?ticket=` when coming back.
    pub ticket: String,
    /// Places from the front (1 = next).
    pub position: u64,
    /// When to come back, ms (with jitter, so a crowd does not come back at once).
    pub retry_after_ms: u64,
    /// Audio right now instead of waiting: the LL-HLS stream (public spaces).
    pub hls: Option<String>,
}

/// Join a space as a listener: verifies the caller (or admits an anonymous listener to a public
/// space), then asks the waiting room. Admitted: `200` and a short-lived listener ticket.
/// Over capacity: `202` and a signed place in the FIFO queue. Stateless: nothing per joiner.
async fn join_space(
    State(app): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<JoinQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let Query(q) = query?;
    let space = app.space(&id)?;
    // Joins are for live spaces on a node that is not draining. In a cluster, a node that
    // does not carry the space (a standby origin, an edge not yet carrying it) is a door to it
    // all the same: it sends joiners to an edge (which checks the room's bars at connect).
    let live = match app.on_air(&space) {
        Ok(live) => Some(live),
        Err(_) if door_elsewhere(&app, &space) => None,
        Err(e) => return Err(e.into()),
    };
    // Who joins, whether they count as anonymous (their own line, proof of work), and the
    // expiry their ticket may not outlive (that of the token they came with).
    let mut returning = false;
    let (identity, anonymous, not_after) = match bearer(&headers) {
        Some(token) => {
            let claims = app.verify(token, &id)?;
            if let Some(refused) = live.as_ref().and_then(|l| l.refusal(&claims.sub)) {
                return Err(refused.into());
            }
            returning = claims.ticket;
            (claims.sub, claims.anon, Some(claims.exp))
        }
        None if app.shield.require_token() => return Err(attack_mode().into()),
        None if space.public && app.config.anonymous_listeners => {
            if app.shield.require_pow() {
                check_pow(&app, &id, q.pow.as_deref())?;
            }
            (anonymous_identity(), true, None)
        }
        None => return Err(ApiError::unauthorized("this space needs a token to listen")),
    };
    let token_identity = bearer(&headers).map(|_| identity.as_str().to_owned());
    app.shield.check_join(client.map(|c| c.0.0), token_identity.as_deref())?;
    app.shield.observe(Signal::Join);
    if returning && app.clustered() && q.ticket.is_none() {
        // In a cluster, a listener admitted before, back with its ticket (its edge died or
        // sent it off): not a new arrival. It does not queue behind the crowd (its ticket
        // already lets it listen on any node, one connection per identity); it only learns
        // where to go, with a ticket that expires with the old one. A node alone has no other
        // node to send it to: there a ticket holder takes its turn in the line like anyone.
        let (token, expires_at) = app.mint_ticket(
            identity.clone(),
            anonymous,
            &id,
            not_after,
            app.config.ticket_ttl_secs,
        )?;
        let urls = app.view(space).urls;
        let node = app.cluster.pick_edge_for_returning(q.avoid.as_deref());
        let ticket = JoinTicket { token, identity, role: Role::Listener, expires_at, urls, node };
        return Ok(Json(ticket).into_response());
    }
    let now = now_unix();
    // Signed-in joiners wait in their own line, called before anonymous ones; a ticket minted
    // for an anonymous joiner does not make its holder signed in.
    let lane = if anonymous { Lane::Anonymous } else { Lane::SignedIn };
    let place = match q.ticket.as_deref().map(|t| app.keys.verify_wait(t, &id, now)) {
        None | Some(Err(TokenError::Expired)) => None,
        Some(Ok(ticket)) if ticket.lane == lane_code(lane) => Some(ticket),
        // A ticket from the other line: a place at the end of this one.
        Some(Ok(_)) => None,
        Some(Err(e)) => return Err(ApiError::bad_request("bad_ticket", e.to_string())),
    };
    let public = space.public;
    let urls = app.view(space).urls;
    // In a cluster, one line for all doors; on its own (or while Redis is away), this node's.
    // Numbers of the two lines never mix: a ticket names the line that numbered it.
    let me = app.cluster.node_id();
    let clustered = app.clustered();
    let (held, own_line) = match &place {
        None => (None, None),
        Some(t) if t.node.is_none() => (Some(t.n), Some(!clustered)),
        Some(t) if t.node.as_deref() == Some(me) => (Some(t.n), Some(true)),
        // Another node's own line: a new place here.
        Some(_) => (None, None),
    };
    // The one line's mark the held place was told against (a door with an older read never
    // tells a later place than that).
    let seen = place.as_ref().filter(|t| t.node.is_none()).and_then(|t| t.seen).unwrap_or(0);
    let mut counted_once = false;
    let decision = match own_line {
        Some(true) => app.shield.arrive(app.total_listeners(), lane, held),
        // Redis out of reach with a number of the one line: a new place in this node's.
        _ => match crate::app::cluster::line::arrive(&app, &id, lane, held, seen).await {
            Some(answer) => {
                // The one line admits each number once across the cluster by itself.
                counted_once = true;
                answer?
            }
            None => app.shield.arrive(app.total_listeners(), lane, None),
        },
    };
    let from_node_line = clustered && !counted_once;
    match decision {
        Decision::Admit => {
            // A called ticket lets one joiner in, not everyone who copied it.
            if let Some(ticket) = place.as_ref().filter(|_| !counted_once)
                && !app
                    .shield
                    .first_use(crate::app::shield::OneUse::WaitTicket, &ticket_key(ticket))
            {
                return Err(ApiError::bad_request(
                    "bad_ticket",
                    "this waiting-room ticket was already used: join again for a new place",
                ));
            }
            let ttl = app.config.ticket_ttl_secs;
            // A ticket never outlives the token it was joined with, and only listens.
            let (token, expires_at) =
                app.mint_ticket(identity.clone(), anonymous, &id, not_after, ttl)?;
            let node = app.cluster.pick_edge(q.avoid.as_deref());
            let ticket =
                JoinTicket { token, identity, role: Role::Listener, expires_at, urls, node };
            Ok(Json(ticket).into_response())
        }
        Decision::Wait { number, position, retry_after } => {
            let retry = jitter(retry_after, 0.2, rand::random());
            let place = WaitPlace {
                space: id,
                n: number,
                lane: lane_code(lane),
                node: from_node_line.then(|| me.to_owned()),
                // The cluster's line: the mark this place is told against.
                seen: counted_once.then(|| number.saturating_sub(position)),
            };
            let ticket = app.keys.mint_wait(place, now, WAIT_TICKET_TTL_SECS)?;
            let hls = public.then(|| urls.hls.clone());
            let waiting =
                Waiting { ticket, position, retry_after_ms: retry.as_millis() as u64, hls };
            let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
            let body = Json(serde_json::json!({ "waiting": waiting }));
            Ok((StatusCode::ACCEPTED, [(header::RETRY_AFTER, secs.to_string())], body)
                .into_response())
        }
    }
}

/// Whether this node, not carrying `space`, may still be its door: clustered, not draining,
/// the space live in the cluster's directory and an edge to send joiners to.
fn door_elsewhere(app: &AppState, space: &townhall_core::Space) -> bool {
    app.clustered()
        && !app.is_draining()
        && space.state == townhall_core::SpaceState::Live
        && app.cluster.has_edges()
}

/// What makes a waiting-room ticket one of a kind (its space, line and number).
fn ticket_key(ticket: &townhall_core::WaitTicket) -> Vec<u8> {
    let mut key = Vec::with_capacity(ticket.space.as_str().len() + 9);
    key.extend_from_slice(ticket.space.as_str().as_bytes());
    key.push(ticket.lane);
    key.extend_from_slice(&ticket.n.to_le_bytes());
    key
}

/// A lane as written into tickets.
fn lane_code(lane: Lane) -> u8 {
    match lane {
        Lane::SignedIn => 0,
        Lane::Anonymous => 1,
    }
}

/// How long a waiting-room ticket keeps its place.
const WAIT_TICKET_TTL_SECS: u64 = 600;

fn anonymous_identity() -> Identity {
    let n: u64 = rand::random();
    Identity::new(format!("anon-{n:016x}")).unwrap_or_else(|_| unreachable!("hex is printable"))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../../../docs/openapi.json"))
}

/// Operator changes to the shield (all fields optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShieldUpdate {
    /// Listeners admitted at once.
    max_listeners: Option<usize>,
    /// Joins admitted per second.
    joins_per_second: Option<u32>,
    /// Attack mode: joins and direct listeners need a token.
    require_token: Option<bool>,
    /// Attack mode: anonymous joiners must show a proof of work.
    require_pow: Option<bool>,
    /// Send new listeners to LL-HLS through caches.
    prefer_hls: Option<bool>,
    /// Requests per second allowed per address (tighten under attack).
    requests_per_ip: Option<u32>,
    /// Burst allowed per address.
    request_burst_per_ip: Option<u32>,
}

/// Checks for an operator token (the `op` claim, every space).
pub fn authorize_admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    app.authorize_operator(headers).map(|_| ()).map_err(ApiError::from)
}

/// `GET /api/v1/admin/shield`: verdict, evidence, capacity, queue, attack mode.
async fn shield_status(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<crate::app::shield::ShieldStatus>, ApiError> {
    authorize_admin(&app, &headers)?;
    Ok(Json(shield_with_cluster(&app)))
}

/// The shield's status, with how the cluster's door admits on a clustered node.
fn shield_with_cluster(app: &AppState) -> crate::app::shield::ShieldStatus {
    let mut status = app.shield.status();
    if app.clustered() {
        let door = app.cluster.connection().is_some();
        status.cluster = Some(crate::app::shield::ClusterAdmission {
            node: app.cluster.node_id().to_owned(),
            redis_up: app.cluster.redis_up(),
            admission: if door { "cluster" } else { "local" },
        });
    }
    status
}

/// `PUT /api/v1/admin/shield`: raise or lower capacity, switch attack mode.
async fn shield_update(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ShieldUpdate>, JsonRejection>,
) -> Result<Json<crate::app::shield::ShieldStatus>, ApiError> {
    authorize_admin(&app, &headers)?;
    let Json(update) = body?;
    app.shield.set_capacity(update.max_listeners, update.joins_per_second);
    if update.requests_per_ip.is_some() || update.request_burst_per_ip.is_some() {
        let current = app.shield.status();
        let rate = update.requests_per_ip.unwrap_or(current.requests_per_ip).max(1);
        let burst = update.request_burst_per_ip.unwrap_or(current.request_burst_per_ip).max(1);
        app.shield.set_ip_rate(rate, burst);
        tracing::warn!(rate, burst, "per-address request limit changed by an operator");
    }
    if let Some(on) = update.prefer_hls {
        app.shield.set_prefer_hls(on);
        tracing::warn!(prefer_hls = on, "scale mode switched by an operator");
    }
    if let Some(on) = update.require_pow {
        app.shield.set_require_pow(on);
        tracing::warn!(
            require_pow = on,
            "proof of work for anonymous joiners switched by an operator"
        );
    }
    if let Some(on) = update.require_token {
        app.shield.set_require_token(on);
        tracing::warn!(require_token = on, "attack mode switched by an operator");
    }
    Ok(Json(shield_with_cluster(&app)))
}

/// A proof-of-work challenge for anonymous joiners.
#[derive(Debug, Serialize)]
pub struct PowChallengeView {
    /// Sign of the node; solve SHA-256(`challenge:counter`) with `difficulty` leading zero bits.
    pub challenge: String,
    /// Leading zero bits required.
    pub difficulty: u8,
    /// When the challenge expires, seconds since the epoch.
    pub expires_at: u64,
}

/// How long a challenge may be worked on.
const POW_TTL_SECS: u64 = 120;

/// Query of `POST /api/v1/pow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowQuery {
    /// The space the solution will join (a challenge admits to one space, once).
    space: String,
}

/// `POST /api/v1/pow?space=ID`: a fresh challenge for joining that space (stateless: signed,
/// expiring; its solution is admitted once).
async fn pow_challenge(
    State(app): State<Arc<AppState>>,
    query: Result<Query<PowQuery>, QueryRejection>,
) -> Result<Json<PowChallengeView>, ApiError> {
    let Query(q) = query?;
    let id = SpaceId::new(q.space)
        .map_err(|e| ApiError::bad_request("invalid_space_id", e.to_string()))?;
    app.space(&id)?;
    let now = now_unix();
    let difficulty = app.config.pow_difficulty;
    let challenge = app.keys.mint_pow(id, rand::random(), difficulty, now, POW_TTL_SECS)?;
    Ok(Json(PowChallengeView { challenge, difficulty, expires_at: now.0 + POW_TTL_SECS }))
}

fn check_pow(app: &AppState, space: &SpaceId, proof: Option<&str>) -> Result<(), ApiError> {
    let proof = proof.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "pow_required",
            format!("this node asks anonymous joiners for a proof of work: POST /api/v1/pow?space={space}, solve, then join with ?pow=challenge:counter"),
        )
    })?;
    let nonce = app
        .keys
        .verify_pow(proof, space, app.config.pow_difficulty, now_unix())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_pow", e.to_string()))?;
    if !app.shield.first_use(crate::app::shield::OneUse::Pow, &nonce.to_le_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_pow",
            "this proof of work was already used: ask for a new challenge",
        ));
    }
    Ok(())
}

/// On an edge: `POST path` (with `body`) goes to the space's `origin`, which decides, and its
/// answer comes back as it was (`502`/`504` when it cannot be asked).
pub(crate) async fn pass_on(
    app: &AppState,
    origin: &str,
    path: &str,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    ask_origin(app, origin, axum::http::Method::POST, path, headers, client, body).await
}

/// `method path` to the space's `origin`, its answer passed back as it was.
pub(crate) async fn ask_origin(
    app: &AppState,
    origin: &str,
    method: axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let answer = crate::app::cluster::forward::to_origin(
        &app.outbound.http,
        origin,
        method,
        path,
        headers,
        client,
        body,
    )
    .await?;
    Ok(answered(answer))
}

/// An origin's answer, passed back as it came (an edge forwarding to a space's origin).
pub(crate) fn answered(answer: crate::app::cluster::forward::Answer) -> Response {
    let mut res = (answer.status, answer.body).into_response();
    if let Some(ct) = answer.content_type {
        res.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    res
}
