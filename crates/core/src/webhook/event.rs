//! The payload: what happened, as the receivers' JSON names it.
//!
//! The Rust shape ([`WebhookEvent`], flat where that is simpler for the server) and the JSON
//! shape (nested `space`, `speaker` and `recording` objects, the documented contract) are kept
//! apart by a private `wire` mirror, so the server's code can change without changing what
//! receivers parse.

use serde::{Deserialize, Serialize};

use crate::{Identity, Role, Space, SpaceId, UnixTime};

/// A space as payloads name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRef {
    /// The space's id.
    pub id: SpaceId,
    /// Its title.
    pub title: String,
}

impl From<&Space> for SpaceRef {
    fn from(space: &Space) -> SpaceRef {
        SpaceRef { id: space.id.clone(), title: space.title.clone() }
    }
}

/// A speaker as payloads name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerRef {
    /// Who.
    pub identity: Identity,
    /// Their role on stage.
    pub role: Role,
}

/// Something that happened, worth telling the outside world.
///
/// Serialised with an `"event"` tag (`space_started`, `space_ended`, `speaker_joined`,
/// `speaker_left`, `recording_finished`) beside a `"space"` object and the event's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "wire::Event", from = "wire::Event")]
pub enum WebhookEvent {
    /// A space went live (created live, or a scheduled one started).
    SpaceStarted {
        /// Which.
        space: SpaceRef,
    },
    /// A live space ended.
    SpaceEnded {
        /// Which.
        space: SpaceRef,
    },
    /// A speaker took a seat on stage (connected to speak).
    SpeakerJoined {
        /// Where.
        space: SpaceRef,
        /// Who.
        speaker: SpeakerRef,
    },
    /// A speaker left their seat (disconnected, moved to the audience or removed).
    SpeakerLeft {
        /// Where.
        space: SpaceRef,
        /// Who.
        speaker: SpeakerRef,
    },
    /// A recording was written. Serialised as `"space": {"id"}` (no title) and
    /// `"recording": {"id", "duration_ms", "bytes", "url"}`.
    RecordingFinished {
        /// The recording's id.
        id: String,
        /// The space recorded.
        space: SpaceId,
        /// Audio duration, ms.
        duration_ms: u64,
        /// File size, bytes.
        bytes: u64,
        /// Where to fetch it on the node (a path, e.g. `/recordings/{id}.opus`).
        url: String,
    },
}

impl WebhookEvent {
    /// The event's name, as in the `"event"` field.
    pub fn name(&self) -> &'static str {
        match self {
            WebhookEvent::SpaceStarted { .. } => "space_started",
            WebhookEvent::SpaceEnded { .. } => "space_ended",
            WebhookEvent::SpeakerJoined { .. } => "speaker_joined",
            WebhookEvent::SpeakerLeft { .. } => "speaker_left",
            WebhookEvent::RecordingFinished { .. } => "recording_finished",
        }
    }

    /// The space it is about.
    pub fn space_id(&self) -> &SpaceId {
        match self {
            WebhookEvent::SpaceStarted { space }
            | WebhookEvent::SpaceEnded { space }
            | WebhookEvent::SpeakerJoined { space, .. }
            | WebhookEvent::SpeakerLeft { space, .. } => &space.id,
            WebhookEvent::RecordingFinished { space, .. } => space,
        }
    }
}

/// The JSON shape of events (nested objects), apart from the Rust shape (flat where simpler).
mod wire {
    use serde::{Deserialize, Serialize};

    use super::{SpaceRef, SpeakerRef, WebhookEvent};
    use crate::SpaceId;

    #[derive(Serialize, Deserialize)]
    pub struct Space {
        id: SpaceId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Recording {
        id: String,
        duration_ms: u64,
        bytes: u64,
        url: String,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "event", rename_all = "snake_case")]
    pub enum Event {
        SpaceStarted { space: Space },
        SpaceEnded { space: Space },
        SpeakerJoined { space: Space, speaker: SpeakerRef },
        SpeakerLeft { space: Space, speaker: SpeakerRef },
        RecordingFinished { space: Space, recording: Recording },
    }

    fn space(s: SpaceRef) -> Space {
        Space { id: s.id, title: Some(s.title) }
    }

    fn space_ref(s: Space) -> SpaceRef {
        SpaceRef { id: s.id, title: s.title.unwrap_or_default() }
    }

    impl From<WebhookEvent> for Event {
        fn from(e: WebhookEvent) -> Event {
            match e {
                WebhookEvent::SpaceStarted { space: s } => Event::SpaceStarted { space: space(s) },
                WebhookEvent::SpaceEnded { space: s } => Event::SpaceEnded { space: space(s) },
                WebhookEvent::SpeakerJoined { space: s, speaker } => {
                    Event::SpeakerJoined { space: space(s), speaker }
                }
                WebhookEvent::SpeakerLeft { space: s, speaker } => {
                    Event::SpeakerLeft { space: space(s), speaker }
                }
                WebhookEvent::RecordingFinished { id, space, duration_ms, bytes, url } => {
                    Event::RecordingFinished {
                        space: Space { id: space, title: None },
                        recording: Recording { id, duration_ms, bytes, url },
                    }
                }
            }
        }
    }

    impl From<Event> for WebhookEvent {
        fn from(e: Event) -> WebhookEvent {
            match e {
                Event::SpaceStarted { space } => {
                    WebhookEvent::SpaceStarted { space: space_ref(space) }
                }
                Event::SpaceEnded { space } => WebhookEvent::SpaceEnded { space: space_ref(space) },
                Event::SpeakerJoined { space, speaker } => {
                    WebhookEvent::SpeakerJoined { space: space_ref(space), speaker }
                }
                Event::SpeakerLeft { space, speaker } => {
                    WebhookEvent::SpeakerLeft { space: space_ref(space), speaker }
                }
                Event::RecordingFinished { space, recording: r } => {
                    WebhookEvent::RecordingFinished {
                        id: r.id,
                        space: space.id,
                        duration_ms: r.duration_ms,
                        bytes: r.bytes,
                        url: r.url,
                    }
                }
            }
        }
    }
}

/// One notification as sent: a unique id (the same on every retry, so receivers can drop
/// duplicates), when it happened, and the event's fields beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    /// Unique event id (the caller makes it, e.g. `evt_` and random hex).
    pub id: String,
    /// When it happened.
    pub created_at: UnixTime,
    /// What happened.
    #[serde(flatten)]
    pub event: WebhookEvent,
}

impl WebhookEnvelope {
    /// The JSON body, exactly the bytes that are signed and sent.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs with string keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::fixtures::{envelope, space};

    #[test]
    fn events_serialise_as_documented() {
        let speaker = SpeakerRef { identity: Identity::new("alice").unwrap(), role: Role::Speaker };
        let e = envelope("evt_1", WebhookEvent::SpeakerJoined { space: space(), speaker });
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "evt_1", "created_at": 1_767_225_600, "event": "speaker_joined",
                "space": {"id": "town", "title": "Town hall"},
                "speaker": {"identity": "alice", "role": "speaker"},
            })
        );
        let e = envelope(
            "evt_2",
            WebhookEvent::RecordingFinished {
                id: "rec1".into(),
                space: SpaceId::new("town").unwrap(),
                duration_ms: 61_000,
                bytes: 250_000,
                url: "/recordings/rec1.opus".into(),
            },
        );
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "evt_2", "created_at": 1_767_225_600, "event": "recording_finished",
                "space": {"id": "town"},
                "recording": {"id": "rec1", "duration_ms": 61_000, "bytes": 250_000,
                              "url": "/recordings/rec1.opus"},
            })
        );
        assert_eq!(e.event.name(), "recording_finished");
        assert_eq!(e.event.space_id().as_str(), "town");
    }

    #[test]
    fn every_event_round_trips() {
        let speaker = SpeakerRef { identity: Identity::new("bo").unwrap(), role: Role::Cohost };
        let events = [
            WebhookEvent::SpaceStarted { space: space() },
            WebhookEvent::SpaceEnded { space: space() },
            WebhookEvent::SpeakerJoined { space: space(), speaker: speaker.clone() },
            WebhookEvent::SpeakerLeft { space: space(), speaker },
            WebhookEvent::RecordingFinished {
                id: "r".into(),
                space: SpaceId::new("town").unwrap(),
                duration_ms: 1,
                bytes: 2,
                url: "/recordings/r.opus".into(),
            },
        ];
        for event in events {
            let name = event.name();
            let e = envelope("evt", event);
            let json = e.to_json();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["event"], name);
            assert_eq!(serde_json::from_slice::<WebhookEnvelope>(&json).unwrap(), e);
        }
    }
}
