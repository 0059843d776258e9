//! Notice and action: anyone in a space reports it or a person in it; hosts read their space's
//! moderation log; operators list every report and moderation action (the record keeping the
//! EU Digital Services Act expects of platforms).
//!
//! - `POST /api/v1/spaces/{id}/reports` (any token for the space): `{"category", "target"?,
//!   "details"?}` → `201` with the stored report; 5 at once, then one a minute per identity.
//! - `GET /api/v1/spaces/{id}/moderation` (host or co-host): the space's moderation log.
//! - `GET /api/v1/admin/reports`, `GET /api/v1/admin/moderation` (operator token for `*`).
//!
//! Lists are newest first, `?limit=` (1 to 500, default 100) and `?before=` (a `seq`) to page.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use townhall_core::{Identity, SpaceId};

use crate::app::error::AppError;
use crate::app::state::{AppState, bearer};
use crate::app::store::ReportCategory;
use crate::clock::now_unix;
use crate::http::api::{authorize_admin, space_id};
use crate::http::error::ApiError;

/// The longest report text, in characters.
pub const MAX_DETAILS_CHARS: usize = 2_000;
pub use crate::app::state::{REPORT_BURST, REPORT_INTERVAL};

/// The routes of reports and moderation logs.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces/{id}/reports", post(file_report))
        .route("/api/v1/spaces/{id}/moderation", get(space_moderation))
        .route("/api/v1/admin/reports", get(all_reports))
        .route("/api/v1/admin/moderation", get(all_moderation))
}

/// A report as the API takes it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    /// What is wrong.
    pub category: ReportCategory,
    /// The person reported; absent to report the space itself.
    #[serde(default)]
    pub target: Option<Identity>,
    /// More about it, up to [`MAX_DETAILS_CHARS`] characters.
    #[serde(default)]
    pub details: Option<String>,
}

/// Paging of lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Entries older than this `seq`.
    pub before: Option<i64>,
    /// At most this many (1 to 500, default 100).
    pub limit: Option<usize>,
    /// Only this space (admin lists).
    pub space: Option<SpaceId>,
}

impl ListQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=500) => Ok(n),
            Some(_) => Err(ApiError::unprocessable("limit must be 1 to 500")),
        }
    }
}

async fn file_report(
    State(app): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<NewReport>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let token = bearer(&headers).ok_or_else(|| {
        ApiError::unauthorized("reporting needs a token for this space (POST .../join gives one)")
    })?;
    let claims = app.verify(token, &id)?;
    app.space(&id)?;
    let Json(report) = body?;
    let client = client.map(|c| c.0.0);
    let relayed_from = app.live(&id).and_then(|live| live.origin().map(str::to_owned));
    let details = report.details.as_deref().map(str::trim).filter(|d| !d.is_empty());
    if details.is_some_and(|d| d.chars().count() > MAX_DETAILS_CHARS) {
        return Err(ApiError::unprocessable(format!(
            "details must be at most {MAX_DETAILS_CHARS} characters"
        )));
    }
    app.limits
        .reports
        .check(&claims.sub, client, Instant::now())
        .map_err(|l| ApiError::rate_limited(&format!("{} (reports)", l.scope), l.retry_after))?;
    if let Some(origin) = relayed_from {
        // Relayed here: reports are kept where the space's room and moderators are. Checked
        // and limited here too, so a flood of reports on an edge stays on the edge.
        let raw = serde_json::to_vec(&report).map_err(|e| ApiError::internal(e.to_string()))?;
        let path = format!("/api/v1/spaces/{id}/reports");
        return crate::http::api::pass_on(&app, &origin, &path, &headers, client, raw.into()).await;
    }
    // SQLite off the async workers: a slow disk delays this report, not every listener.
    let store = app.store.clone();
    let (space, reporter, target) = (id.clone(), claims.sub.clone(), report.target.clone());
    let details = details.map(str::to_owned);
    let stored = tokio::task::spawn_blocking(move || {
        store.add_report(
            &space,
            now_unix(),
            &reporter,
            target.as_ref(),
            report.category,
            details.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("report task: {e}")))??;
    tracing::info!(space = %id, reporter = %claims.sub, category = ?stored.category, "report filed");
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

async fn space_moderation(
    State(app): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    if let Some(origin) = app.live(&id).and_then(|live| live.origin().map(str::to_owned)) {
        // Relayed here: the log is kept where the room acts. The token is checked here; the
        // origin's room decides who may read it.
        let token = bearer(&headers)
            .ok_or_else(|| ApiError::unauthorized("the moderation log needs a bearer token"))?;
        app.verify(token, &id)?;
        query?;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        return crate::http::api::ask_origin(
            &app,
            &origin,
            axum::http::Method::GET,
            path,
            &headers,
            None,
            bytes::Bytes::new(),
        )
        .await;
    }
    app.authorize_space(&headers, &id, crate::app::auth::Manage::ReadModeration)?;
    let Query(q) = query?;
    let limit = q.limit()?;
    let entries = app
        .blocking(move |app| Ok::<_, AppError>(app.store.moderation(Some(&id), q.before, limit)?))
        .await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn all_reports(
    State(app): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&app, &headers)?;
    let Query(q) = query?;
    let limit = q.limit()?;
    let reports = app
        .blocking(move |app| {
            Ok::<_, AppError>(app.store.reports(q.space.as_ref(), q.before, limit)?)
        })
        .await?;
    Ok(Json(json!({ "reports": reports })))
}

async fn all_moderation(
    State(app): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize_admin(&app, &headers)?;
    let Query(q) = query?;
    let limit = q.limit()?;
    let entries = app
        .blocking(move |app| {
            Ok::<_, AppError>(app.store.moderation(q.space.as_ref(), q.before, limit)?)
        })
        .await?;
    Ok(Json(json!({ "entries": entries })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_the_range_are_refused() {
        let q = |limit| ListQuery { before: None, limit, space: None };
        assert_eq!(q(None).limit().ok(), Some(100));
        assert_eq!(q(Some(500)).limit().ok(), Some(500));
        assert!(q(Some(0)).limit().is_err());
        assert!(q(Some(501)).limit().is_err());
    }
}
