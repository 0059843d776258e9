//! Captions over HTTP: the host's switch and the space's latest cues.
//!
//! `POST /api/v1/spaces/{id}/captions` `{"captions": true|false}` (host or co-host);
//! `GET /api/v1/spaces/{id}/captions` (whoever may see the space): on or off, the engine, and
//! the latest cues. Cues also reach listeners as WebSocket events, in `/summary`, and as the
//! LL-HLS subtitle rendition.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::state::AppState;
use crate::http::api::space_id;
use crate::http::error::ApiError;

/// Cues the captions answer and the summary carry.
pub(crate) const LATEST_CUES: usize = 5;

/// Routes: the switch and the state.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/spaces/{id}/captions", get(show).post(switch))
}

/// `{"captions": true}` turns captions on, `false` off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionsToggle {
    /// Captions on or off.
    pub captions: bool,
}

async fn switch(
    State(app): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<CaptionsToggle>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    if let Some(origin) = app.live(&id).and_then(|live| live.origin().map(str::to_owned)) {
        // Relayed here: captions are made where the space is mixed. The token is checked here
        // (a flood of forged switches stays on the edge); the origin's room decides.
        let token = crate::app::state::bearer(&headers)
            .ok_or_else(|| ApiError::unauthorized("switching captions needs a bearer token"))?;
        app.verify(token, &id)?;
        let Json(toggle) = body?;
        let raw = serde_json::to_vec(&json!({ "captions": toggle.captions }))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let path = format!("/api/v1/spaces/{id}/captions");
        return crate::http::api::pass_on(
            &app,
            &origin,
            &path,
            &headers,
            client.map(|c| c.0.0),
            raw.into(),
        )
        .await;
    }
    app.authorize_space(&headers, &id, crate::app::auth::Manage::Caption)?;
    let Json(toggle) = body?;
    let view = app.set_captions(&id, toggle.captions)?;
    let view = serde_json::to_value(view).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(view).into_response())
}

async fn show(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = space_id(path)?;
    let space = app.visible_space(&id, &headers)?;
    let live = app.on_air(&space)?;
    let view = app.captions_view(&live);
    let cues = live.captions().map(|r| r.board.latest(LATEST_CUES)).unwrap_or_default();
    let mut body = serde_json::to_value(view).map_err(|e| ApiError::internal(e.to_string()))?;
    body["cues"] = json!(cues);
    Ok(Json(body))
}
