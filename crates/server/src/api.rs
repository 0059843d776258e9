//! The JSON API under `/api/v1`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use townhall_core::{Identity, NewSpace, Role, SpaceId, SpaceScope};

use crate::clock::now_unix;
use crate::error::ApiError;
use crate::state::{AppState, SpaceUrls, SpaceView, bearer};

/// Routes of `/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces", get(list_spaces).post(create_space))
        .route("/api/v1/spaces/{id}", get(get_space))
        .route("/api/v1/spaces/{id}/start", post(start_space))
        .route("/api/v1/spaces/{id}/end", post(end_space))
        .route("/api/v1/spaces/{id}/join", post(join_space))
        .route("/api/v1/openapi.json", get(openapi))
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

async fn list_spaces(State(app): State<Arc<AppState>>) -> Json<SpaceList> {
    Json(SpaceList { spaces: app.list() })
}

async fn get_space(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SpaceView>, ApiError> {
    let id = space_id(path)?;
    Ok(Json(app.view(app.space(&id)?)))
}

async fn create_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<NewSpace>, JsonRejection>,
) -> Result<Response, ApiError> {
    let claims = app.authorize_manage(&headers, None)?;
    let Json(req) = body?;
    // A token scoped to one space may create exactly that space.
    if let SpaceScope::One(granted) = &claims.space
        && req.id.as_ref() != Some(granted)
    {
        return Err(ApiError::forbidden("the token grants one space; create it by that id"));
    }
    let space = app.create(req, claims.sub)?;
    let location = format!("/api/v1/spaces/{}", space.id);
    let view = app.view(space);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

async fn start_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SpaceView>, ApiError> {
    manage(&app, &headers, path, AppState::start)
}

async fn end_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<SpaceView>, ApiError> {
    manage(&app, &headers, path, AppState::end)
}

/// A host action on one space: authorise, apply, show the result.
fn manage(
    app: &AppState,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    action: fn(&AppState, &SpaceId) -> Result<townhall_core::Space, ApiError>,
) -> Result<Json<SpaceView>, ApiError> {
    let id = space_id(path)?;
    app.authorize_manage(headers, Some(&id))?;
    Ok(Json(app.view(action(app, &id)?)))
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
}

/// Join a space as a listener: verifies the caller (or admits an anonymous listener to a public
/// space) and hands out a short-lived ticket. Stateless: nothing is stored.
async fn join_space(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JoinTicket>, ApiError> {
    let id = space_id(path)?;
    let space = app.space(&id)?;
    // Joins are for live spaces on a node that is not draining.
    app.on_air(&space)?;
    let (identity, role) = match bearer(&headers) {
        Some(token) => {
            let claims = app.verify(token, &id)?;
            (claims.sub, claims.role)
        }
        None if space.public && app.config.anonymous_listeners => {
            (anonymous_identity(), Role::Listener)
        }
        None => return Err(ApiError::unauthorized("this space needs a token to listen")),
    };
    let now = now_unix();
    let ttl = app.config.ticket_ttl_secs;
    let token = app.keys.mint(identity.clone(), role, SpaceScope::One(id.clone()), now, ttl)?;
    let urls = app.view(space).urls;
    Ok(Json(JoinTicket { token, identity, role, expires_at: now.0 + ttl, urls }))
}

fn anonymous_identity() -> Identity {
    let n: u64 = rand::random();
    Identity::new(format!("anon-{n:016x}")).unwrap_or_else(|_| unreachable!("hex is printable"))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../../../docs/openapi.json"))
}
