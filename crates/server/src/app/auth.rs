//! Who may do what: tokens verified, tickets minted for URLs, and management decided by the
//! room's current state (not by what a token once said); operators by their explicit claim.

use axum::http::HeaderMap;
use townhall_core::{Claims, Role, SpaceId, SpaceState};

use crate::app::error::AppError;
use crate::app::state::{AppState, bearer};
use crate::clock::now_unix;

/// What a management request does to a space (each needs a role the room gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manage {
    /// Take a scheduled space live (host or co-host).
    Start,
    /// End the space (the host only).
    End,
    /// Start or stop recording (host or co-host).
    Record,
    /// Read the space's moderation log (host or co-host).
    ReadModeration,
    /// Turn captions on or off (host or co-host).
    Caption,
    /// Read the space's audience statistics (host or co-host).
    ReadStats,
}

impl Manage {
    fn verb(self) -> &'static str {
        match self {
            Manage::Start => "start",
            Manage::End => "end",
            Manage::Record => "record",
            Manage::ReadModeration => "read the moderation log of",
            Manage::Caption => "caption",
            Manage::ReadStats => "read the statistics of",
        }
    }
}

impl AppState {
    /// Verifies a token for `space`.
    pub fn verify(&self, token: &str, space: &SpaceId) -> Result<Claims, AppError> {
        Ok(self.keys.verify_for(token, space, now_unix())?)
    }

    /// Verifies a token that arrived in a URL (`?token=`) for `space`. URLs leak (logs,
    /// history, shared links), so they carry only listening: a ticket the node minted, or a
    /// listener token for this one space. Anything stronger belongs in a header.
    pub fn verify_url_token(&self, token: &str, space: &SpaceId) -> Result<Claims, AppError> {
        let claims = self.verify(token, space)?;
        let listen_only = claims.role == Role::Listener
            && !claims.op
            && claims.space != townhall_core::SpaceScope::Any;
        if !(claims.ticket || listen_only) {
            return Err(AppError::bad_request(
                "token_in_url",
                "this token can do more than listen: send it in the Authorization header (or, \
                 for a browser WebSocket, as the `bearer.<token>` subprotocol); URLs carry only \
                 listening tickets",
            ));
        }
        Ok(claims)
    }

    /// A short-lived listening ticket for `space` for the holder of `claims` (to put in a URL:
    /// an `<audio>` element or a WebSocket cannot send headers). It never outlives `claims`.
    pub fn listen_ticket(
        &self,
        claims: &Claims,
        space: &SpaceId,
        ttl_secs: u64,
    ) -> Result<String, AppError> {
        let ticket =
            self.mint_ticket(claims.sub.clone(), claims.anon, space, Some(claims.exp), ttl_secs)?;
        Ok(ticket.0)
    }

    /// Mints a listening ticket (listener role, one space, the `ticket` claim) for `who`, valid
    /// `ttl_secs` but never past `not_after`; returns it with its expiry. The one place tickets
    /// are made, for `join` and for URLs alike.
    pub fn mint_ticket(
        &self,
        who: townhall_core::Identity,
        anon: bool,
        space: &SpaceId,
        not_after: Option<u64>,
        ttl_secs: u64,
    ) -> Result<(String, u64), AppError> {
        let now = now_unix();
        let expires_at = not_after.map_or(now.0 + ttl_secs, |exp| exp.min(now.0 + ttl_secs));
        let ticket = Claims {
            anon,
            ticket: true,
            ..Claims::new(
                self.keys.api_key(),
                who,
                Role::Listener,
                townhall_core::SpaceScope::One(space.clone()),
                now,
                expires_at.saturating_sub(now.0),
            )
        };
        Ok((self.keys.mint_claims(ticket)?, expires_at))
    }

    /// Verifies a bearer token that may create spaces: an operator's, or a host or co-host
    /// token (a one-space token creates only that space; the caller checks).
    pub fn authorize_create(&self, headers: &HeaderMap) -> Result<Claims, AppError> {
        let claims = self.bearer_claims(headers)?;
        if !claims.is_operator() && !claims.role.can_manage() {
            return Err(AppError::forbidden(format!("role {} may not create spaces", claims.role)));
        }
        Ok(claims)
    }

    /// Verifies a bearer token that may do `what` to space `id`. Operators may do anything;
    /// anyone else needs what the room says now, not what their token once said: a co-host the
    /// room demoted, removed or blocked manages nothing, and ending is for the room's host.
    pub fn authorize_space(
        &self,
        headers: &HeaderMap,
        id: &SpaceId,
        what: Manage,
    ) -> Result<Claims, AppError> {
        let claims = self.bearer_claims(headers)?;
        if !claims.space.covers(id) {
            return Err(AppError::forbidden("the token does not grant this space"));
        }
        if claims.is_operator() {
            return Ok(claims);
        }
        let space = self.space(id)?;
        let role = match self.live(id) {
            Some(live) if space.state == SpaceState::Live => {
                live.authority(&claims.sub, claims.role)?
            }
            // No room yet (scheduled) or any more (ended): the space's record names its host;
            // other managers keep what their token says, short of ending or reading an ended
            // space's log.
            _ if claims.sub == space.host => Role::Host,
            _ if claims.role.can_manage() && space.state == SpaceState::Scheduled => Role::Cohost,
            _ => Role::Listener,
        };
        let allowed = match what {
            Manage::End => role == Role::Host,
            Manage::Start
            | Manage::Record
            | Manage::ReadModeration
            | Manage::Caption
            | Manage::ReadStats => role.can_manage(),
        };
        if !allowed {
            return Err(AppError::forbidden(format!(
                "{} may not {} this space (the room gives them the role {role})",
                claims.sub,
                what.verb()
            )));
        }
        Ok(claims)
    }

    /// Verifies an operator token (the admin API): `op` claim and every space (`*`).
    pub fn authorize_operator(&self, headers: &HeaderMap) -> Result<Claims, AppError> {
        let claims = self.bearer_claims(headers)?;
        if !claims.is_operator() {
            return Err(AppError::forbidden(
                "operator endpoints need an operator token (townhall token --operator --space '*')",
            ));
        }
        Ok(claims)
    }

    /// The verified claims of the `Authorization: Bearer` token. Tickets meant for URLs manage
    /// nothing.
    fn bearer_claims(&self, headers: &HeaderMap) -> Result<Claims, AppError> {
        let token = bearer(headers)
            .ok_or_else(|| AppError::unauthorized("an Authorization: Bearer token is required"))?;
        let claims = self.keys.verify(token, now_unix())?;
        if claims.ticket {
            return Err(AppError::forbidden("a listening ticket cannot manage spaces"));
        }
        Ok(claims)
    }

    /// The verified claims of the caller's bearer token, if any (invalid ones count as none).
    pub(crate) fn visitor(&self, headers: &HeaderMap) -> Option<Claims> {
        bearer(headers).and_then(|t| self.keys.verify(t, now_unix()).ok())
    }
}
