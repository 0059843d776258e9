//! Audience statistics for hosts and operators.
//!
//! - `GET /api/v1/spaces/{id}/stats` (the space's host or a co-host, as the room says now; or
//!   an operator): peak, average and unique listeners, listen-minutes, joins by protocol,
//!   requests to speak, reactions, the time series and the retention curve.
//! - `GET /api/v1/admin/stats?limit=` (operator token): the spaces counted last (1 to 500,
//!   default 100), each's numbers, and totals across them.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::auth::Manage;
use crate::app::state::AppState;
use crate::http::api::{authorize_admin, space_id};
use crate::http::error::ApiError;

/// The routes of statistics.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces/{id}/stats", get(space_stats))
        .route("/api/v1/admin/stats", get(all_stats))
}

/// `?limit=` of the operators' view.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverviewQuery {
    limit: Option<usize>,
}

async fn space_stats(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = space_id(path)?;
    app.authorize_space(&headers, &id, Manage::ReadStats)?;
    let live = app.live(&id).is_some();
    let space = id.clone();
    let report = app.blocking(move |app| app.space_stats(&space)).await?;
    let mut body = serde_json::to_value(report).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(map) = body.as_object_mut() {
        map.insert("space".into(), json!(id));
        map.insert("live".into(), json!(live));
    }
    Ok(Json(body))
}

async fn all_stats(
    State(app): State<Arc<AppState>>,
    query: Result<Query<OverviewQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&app, &headers)?;
    let Query(q) = query?;
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=500) => n,
        Some(_) => return Err(ApiError::unprocessable("limit must be 1 to 500")),
    };
    let (totals, spaces) = app.blocking(move |app| app.stats_overview(limit)).await?;
    Ok(Json(json!({ "totals": totals, "spaces": spaces })))
}
