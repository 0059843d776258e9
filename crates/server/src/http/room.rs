//! The room over HTTP: `GET /api/v1/spaces/{id}/room` shows the stage, raised hands and
//! invitations; `POST /api/v1/spaces/{id}/actions` lets the token's holder act (request to
//! speak, accept, mute, remove, block, react, ...). The rules are the room's
//! ([`townhall_core::room`]); this module parses requests, applies them and answers.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use townhall_core::room::{Action, Reaction};
use townhall_core::{Identity, SpaceId};

use crate::app::error::AppError;
use crate::app::state::{AppState, bearer};
use crate::clock::now_unix;
use crate::http::api::{answered, pass_on, space_id};
use crate::http::error::ApiError;

/// The room's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/spaces/{id}/room", get(view))
        .route("/api/v1/spaces/{id}/actions", post(act))
        .route("/api/v1/spaces/{id}/summary", get(summary))
}

/// An action as the API takes it: `{"action": "mute", "target": "bob", "reason": "..."}`.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// The action's name (snake_case).
    pub action: String,
    /// Whom it is about, for actions on someone.
    pub target: Option<String>,
    /// Why (kept in the moderation log).
    pub reason: Option<String>,
    /// For `react`: the emoji or its name.
    pub reaction: Option<String>,
}

/// Parses a request into a room action.
pub fn parse_action(req: ActionRequest) -> Result<Action, ApiError> {
    let target = || -> Result<Identity, ApiError> {
        let raw = req
            .target
            .clone()
            .ok_or_else(|| ApiError::unprocessable(format!("{} needs a \"target\"", req.action)))?;
        Identity::new(raw).map_err(|e| ApiError::unprocessable(format!("target: {e}")))
    };
    let reason = req.reason.clone();
    Ok(match req.action.as_str() {
        "leave" => Action::Leave,
        "request_to_speak" => Action::RequestToSpeak,
        "cancel_request" => Action::CancelRequest,
        "take_stage" => Action::TakeStage,
        "invite" => Action::InviteToSpeak { target: target()? },
        "accept_invitation" => Action::AcceptInvitation,
        "decline_invitation" => Action::DeclineInvitation,
        "accept_request" => Action::AcceptRequest { target: target()? },
        "decline_request" => Action::DeclineRequest { target: target()? },
        "mute" => Action::Mute { target: target()?, reason },
        "unmute" => Action::Unmute { target: target()? },
        "move_to_audience" => Action::MoveToAudience { target: target()?, reason },
        "promote_cohost" => Action::PromoteCohost { target: target()? },
        "demote_cohost" => Action::DemoteCohost { target: target()? },
        "transfer_host" => Action::TransferHost { target: target()? },
        "remove" => Action::Remove { target: target()?, reason },
        "block" => Action::Block { target: target()?, reason },
        "unblock" => Action::Unblock { target: target()? },
        "react" => {
            let raw = req.reaction.as_deref().unwrap_or("");
            let reaction: Reaction =
                raw.parse().map_err(|e| ApiError::unprocessable(format!("{e}")))?;
            Action::React { reaction }
        }
        "end" => Action::End,
        other => {
            return Err(ApiError::unprocessable(format!(
                "unknown action {other:?}: see the OpenAPI description for the list"
            )));
        }
    })
}

async fn view(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = app.visible_space(&id, &headers)?;
    let live = app.on_air(&space)?;
    if let Some(origin) = live.origin() {
        // Relayed here: the room is the origin's.
        let answer =
            app.cluster.rooms().get(&app.outbound.http, origin, &id, "room", &headers).await?;
        return Ok(answered(answer));
    }
    Ok(Json(json!({ "room": live.room_view(), "talking": live.talking() })).into_response())
}

/// A cheap, cacheable summary for listeners without a WebSocket (HLS, CDN): who is on stage,
/// how many listen, raised hands, the latest second's reactions. Poll it about once a second;
/// caches may keep it for one.
async fn summary(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = space_id(path)?;
    let space = app.visible_space(&id, &headers)?;
    let live = app.on_air(&space)?;
    // The cluster's count: this node's listeners and the others' from their heartbeats.
    let listeners = live.feed().total_listeners() + app.cluster.others(&id);
    let body = match live.origin() {
        Some(origin) => {
            // Relayed here: the origin's summary, with the count as this node knows it.
            let answer = app
                .cluster
                .rooms()
                .get(&app.outbound.http, origin, &id, "summary", &headers)
                .await?;
            if !answer.status.is_success() {
                return Ok(answered(answer));
            }
            let mut body: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| ApiError::internal(format!("the origin's summary: {e}")))?;
            body["listeners"] = json!(listeners);
            body
        }
        None => {
            let room = live.room_view();
            json!({
                "id": id,
                "state": space.state,
                "speakers": room.speakers,
                "talking": live.talking(),
                "hands": room.hands_total,
                "listeners": listeners,
                "reactions": live.last_reactions(),
                "captions": live.captions().map(|run| json!({
                    "on": run.active,
                    "cues": run.board.latest(crate::http::captions::LATEST_CUES),
                })),
            })
        }
    };
    let mut res = Json(body).into_response();
    // A private space's summary is for its token holders only: no shared caches.
    let cache = if space.public { "public, max-age=1" } else { "private, max-age=1" };
    res.headers_mut()
        .insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static(cache));
    Ok(res)
}

/// Per-identity limits: raised and lowered hands are broadcast to every listener, so they are
/// limited tightly; other actions loosely; reactions by the room itself.
fn limit_action(
    app: &AppState,
    who: &Identity,
    client: Option<std::net::IpAddr>,
    action: &Action,
) -> Result<(), ApiError> {
    let limiter = match action {
        Action::React { .. } => return Ok(()),
        Action::RequestToSpeak | Action::CancelRequest => &app.limits.hands,
        _ => &app.limits.actions,
    };
    limiter
        .check(who, client, std::time::Instant::now())
        .map_err(|l| ApiError::rate_limited(&format!("{} (room actions)", l.scope), l.retry_after))
}

async fn act(
    State(app): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::pipeline::net::ClientAddr>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<ActionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id: SpaceId = space_id(path)?;
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("acting in a space needs a bearer token"))?;
    let claims = app.verify(token, &id)?;
    let space = app.space(&id)?;
    let live = app.on_air(&space)?;
    let Json(req) = body?;
    let client = client.map(|c| c.0.0);
    if let Some(origin) = live.origin() {
        // Relayed here: the room that decides is the origin's. Limited here too, so a flood
        // on an edge stays on the edge.
        let raw = serde_json::to_vec(&req).map_err(|e| ApiError::internal(e.to_string()))?;
        let action = parse_action(req)?;
        limit_action(&app, &claims.sub, client, &action)?;
        let path = format!("/api/v1/spaces/{id}/actions");
        let answer = pass_on(&app, origin, &path, &headers, client, raw.into()).await;
        app.cluster.rooms().invalidate(&id);
        return answer;
    }
    let action = parse_action(req)?;
    limit_action(&app, &claims.sub, client, &action)?;
    let ends = matches!(action, Action::End);
    // The room writes its moderation log to the database: off the async workers.
    let acting = live.clone();
    let events = app
        .blocking(move |app| {
            let events = acting.act(&claims.sub, claims.role, action, now_unix())?;
            if ends {
                app.end(&id)?;
            }
            Ok::<_, AppError>(events)
        })
        .await?;
    Ok(Json(json!({ "events": events, "room": live.room_view() })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(action: &str, target: Option<&str>) -> ActionRequest {
        ActionRequest {
            action: action.into(),
            target: target.map(Into::into),
            reason: None,
            reaction: None,
        }
    }

    #[test]
    fn actions_parse_and_targets_are_required() {
        assert_eq!(parse_action(req("request_to_speak", None)).ok(), Some(Action::RequestToSpeak));
        assert!(matches!(
            parse_action(req("mute", Some("bob"))),
            Ok(Action::Mute { target, .. }) if target.as_str() == "bob"
        ));
        assert_eq!(parse_action(req("mute", None)).err().map(|e| e.status.as_u16()), Some(422));
        assert_eq!(parse_action(req("fly", None)).err().map(|e| e.status.as_u16()), Some(422));
        let mut clap = req("react", None);
        clap.reaction = Some("👏".into());
        assert!(matches!(parse_action(clap), Ok(Action::React { .. })));
        assert!(parse_action(req("react", None)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(action in ".{0,20}", target in proptest::option::of(".{0,40}"), reaction in proptest::option::of(".{0,8}")) {
            let _ = parse_action(ActionRequest { action, target, reason: None, reaction });
        }
    }
}
