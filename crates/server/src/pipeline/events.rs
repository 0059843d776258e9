//! The listener protocol's text messages: one typed enum for every JSON event the node sends on
//! a listening or speaking WebSocket (`{"type": ...}`), beside the binary frames of
//! [`townhall_media::wire`]. `docs/protocol.md` documents both. Room events (hands, mutes,
//! reactions, ...) are [`RoomEvent`]s, serialised by the room itself with the same `type` tag.

use serde::Serialize;
use townhall_core::room::RoomEvent;
use townhall_core::{Identity, Role, Space, SpaceId, SpaceState};

/// A text event to listeners and speakers.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ListenerEvent<'a> {
    /// First message of every session: the space, who the session is, and the codec.
    Hello {
        /// The space joined.
        space: SpaceRef<'a>,
        /// Who the session is (`anonymous` without a token).
        identity: &'a Identity,
        /// The role the session has.
        role: Role,
        /// Program frames per binary message.
        batch: usize,
        /// The program stream's codec.
        codec: Codec,
    },
    /// Listeners right now (sent when the count changes).
    Listeners {
        /// Listeners of every protocol on this node.
        count: usize,
    },
    /// Who is talking (voice activity), sent when it changes.
    Speaking {
        /// Their identities.
        speakers: &'a [Identity],
    },
    /// The space's state changed (today only to `ended`).
    State {
        /// The new state.
        state: SpaceState,
    },
    /// The node ends this session, and why (`server_shutdown`, `replaced_by_new_session`,
    /// `moved_to_audience`, `removed`, ...); reconnect after the delay if it makes sense.
    Bye {
        /// Why.
        reason: &'a str,
        /// When to reconnect, ms.
        reconnect_after_ms: u64,
    },
    /// A speaker's message was refused (bad frame, too fast); the session goes on.
    Error {
        /// A stable code.
        code: &'a str,
        /// A human explanation.
        message: &'a str,
    },
    /// Recording started or stopped.
    Recording {
        /// Whether the space is being recorded now.
        recording: bool,
        /// The recording's id.
        id: &'a str,
    },
    /// Words of the space's captions: interims of a phrase, then its final, with one `id`.
    Caption {
        /// The phrase: a later cue of the same id replaces an earlier one.
        id: u64,
        /// Whether these are the phrase's last words.
        #[serde(rename = "final")]
        is_final: bool,
        /// `seq` of the program frame where the words start.
        start_seq: u64,
        /// `seq` of the program frame after they end.
        end_seq: u64,
        /// When that first frame was mixed (µs since the epoch, the frames' `mixed_at_us`).
        start_us: u64,
        /// When the frame after the words was mixed.
        end_us: u64,
        /// The words.
        text: &'a str,
        /// Who said them, where known.
        speaker: Option<&'a str>,
    },
    /// Captions were turned on or off for the space.
    Captions {
        /// On or off.
        on: bool,
        /// The engine, once it runs.
        engine: Option<&'a str>,
    },
    /// How far the space's captions are settled: every cue that overlaps program frames
    /// before `seq` has its final (or was given up). Sent on the one-frame stream only (where
    /// edges' relays listen), when it crosses an LL-HLS segment boundary: an edge lists a
    /// subtitle segment once it is settled, as the origin does.
    CaptionsSettled {
        /// The frontier, a program frame number.
        seq: u64,
        /// The latest program frame the captions heard.
        latest: u64,
    },
    /// Something changed in the room; the room's own event, with its own `type`.
    #[serde(untagged)]
    Room(&'a RoomEvent),
}

/// The space as the hello names it.
#[derive(Debug, Clone, Serialize)]
pub struct SpaceRef<'a> {
    /// Its id.
    pub id: &'a SpaceId,
    /// Its title.
    pub title: &'a str,
    /// Its state.
    pub state: SpaceState,
}

impl<'a> From<&'a Space> for SpaceRef<'a> {
    fn from(space: &'a Space) -> SpaceRef<'a> {
        SpaceRef { id: &space.id, title: &space.title, state: space.state }
    }
}

/// The program stream's codec, as the hello describes it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Codec {
    /// Always `opus`.
    pub name: &'static str,
    /// Hz.
    pub sample_rate: u32,
    /// Always 1 (mono).
    pub channels: u8,
    /// Duration of one frame, ms.
    pub frame_ms: u32,
}

impl Codec {
    /// The program stream's codec.
    pub const PROGRAM: Codec = Codec {
        name: "opus",
        sample_rate: townhall_media::SAMPLE_RATE,
        channels: 1,
        frame_ms: townhall_media::FRAME_MS,
    };
}

impl ListenerEvent<'_> {
    /// How long clients wait before reconnecting after a `bye` that invites it.
    pub const RECONNECT_AFTER_MS: u64 = 1_000;
    /// The delay in the `bye` of a draining node (`server_shutdown`): none, since the node
    /// already spreads its listeners' departures over its drain; each goes back through the door
    /// at once (plus its first backoff draw), so it is away from the audio for a moment only.
    pub const DRAIN_RECONNECT_AFTER_MS: u64 = 0;

    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; an empty object is the harmless fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(e: ListenerEvent<'_>) -> Value {
        serde_json::from_str(&e.to_json()).expect("json")
    }

    #[test]
    fn events_keep_their_wire_shape() {
        assert_eq!(
            parse(ListenerEvent::Listeners { count: 3 }),
            json!({"type":"listeners","count":3})
        );
        assert_eq!(
            parse(ListenerEvent::State { state: SpaceState::Ended }),
            json!({"type":"state","state":"ended"})
        );
        assert_eq!(
            parse(ListenerEvent::Bye { reason: "server_shutdown", reconnect_after_ms: 1000 }),
            json!({"type":"bye","reason":"server_shutdown","reconnect_after_ms":1000})
        );
        let who = Identity::new("ann").expect("id");
        assert_eq!(
            parse(ListenerEvent::Speaking { speakers: std::slice::from_ref(&who) }),
            json!({"type":"speaking","speakers":["ann"]})
        );
        assert_eq!(
            parse(ListenerEvent::Recording { recording: true, id: "r1" }),
            json!({"type":"recording","recording":true,"id":"r1"})
        );
        assert_eq!(
            parse(ListenerEvent::Caption {
                id: 7,
                is_final: true,
                start_seq: 10,
                end_seq: 60,
                start_us: 1_000,
                end_us: 2_000,
                text: "hello",
                speaker: Some("ann"),
            }),
            json!({"type":"caption","id":7,"final":true,"start_seq":10,"end_seq":60,
                   "start_us":1000,"end_us":2000,"text":"hello","speaker":"ann"})
        );
        assert_eq!(
            parse(ListenerEvent::Captions { on: false, engine: None }),
            json!({"type":"captions","on":false,"engine":null})
        );
        assert_eq!(
            parse(ListenerEvent::CaptionsSettled { seq: 300, latest: 310 }),
            json!({"type":"captions_settled","seq":300,"latest":310})
        );
        let room = RoomEvent::Left { who: who.clone() };
        let as_room = parse(ListenerEvent::Room(&room));
        assert_eq!(as_room, serde_json::to_value(&room).expect("room event"), "untouched");
        assert_eq!(as_room["type"], "left");
    }

    #[test]
    fn the_hello_names_space_identity_role_and_codec() {
        let space = Space::create(
            SpaceId::new("s").expect("id"),
            townhall_core::NewSpace {
                id: None,
                title: "T".into(),
                description: None,
                scheduled_for: None,
                live: true,
                public: true,
            },
            Identity::new("h").expect("id"),
            townhall_core::UnixTime(0),
        )
        .expect("space");
        let who = Identity::new("ann").expect("id");
        let hello = parse(ListenerEvent::Hello {
            space: (&space).into(),
            identity: &who,
            role: Role::Listener,
            batch: 5,
            codec: Codec::PROGRAM,
        });
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["space"], json!({"id":"s","title":"T","state":"live"}));
        assert_eq!(
            (hello["identity"].as_str(), hello["role"].as_str()),
            (Some("ann"), Some("listener"))
        );
        assert_eq!(
            hello["codec"],
            json!({"name":"opus","sample_rate":48000,"channels":1,"frame_ms":20})
        );
    }
}
