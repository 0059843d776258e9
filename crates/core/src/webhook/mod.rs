//! Webhooks, like LiveKit's: what happened on a node (a space started or ended, a speaker took
//! or left a seat, a recording finished), as signed JSON POSTed to the operators' receivers.
//!
//! Three sans-IO pieces: the payload ([`WebhookEvent`] inside a [`WebhookEnvelope`]), the
//! Stripe-style signature ([`sign`], [`verify`]) and the delivery queue ([`Outbox`]: bounded,
//! per-endpoint retries with capped exponential backoff). The server sends the requests and
//! reads the clock; time comes in as milliseconds (`now_ms`, any monotonic origin) or
//! [`UnixTime`](crate::UnixTime).
//!
//! The JSON a receiver gets:
//!
//! ```json
//! {"id": "evt_5f0c...", "created_at": 1767225600, "event": "speaker_joined",
//!  "space": {"id": "town", "title": "Town hall"},
//!  "speaker": {"identity": "alice", "role": "speaker"}}
//! ```
//!
//! Each piece is its own file, so that a change to the JSON, the signature scheme or the retry
//! policy is read and reviewed on its own: `event.rs` (what is said), `signature.rs` (how a
//! receiver knows it came from this node) and `outbox.rs` (getting it there despite receivers
//! that are down).

mod event;
mod outbox;
mod signature;

pub use event::{SpaceRef, SpeakerRef, WebhookEnvelope, WebhookEvent};
pub use outbox::{
    Delivery, DeliveryId, Evicted, Failure, Outbox, OutboxConfig, OutboxStats, backoff_ms,
};
pub use signature::{SIGNATURE_HEADER, SignatureError, sign, verify};

/// Payloads the tests of every piece share.
#[cfg(test)]
mod fixtures {
    use super::{SpaceRef, WebhookEnvelope, WebhookEvent};
    use crate::{SpaceId, UnixTime};

    pub(super) fn space() -> SpaceRef {
        SpaceRef { id: SpaceId::new("town").unwrap(), title: "Town hall".into() }
    }

    pub(super) fn envelope(id: &str, event: WebhookEvent) -> WebhookEnvelope {
        WebhookEnvelope { id: id.into(), created_at: UnixTime(1_767_225_600), event }
    }

    pub(super) fn started(id: &str) -> WebhookEnvelope {
        envelope(id, WebhookEvent::SpaceStarted { space: space() })
    }
}
