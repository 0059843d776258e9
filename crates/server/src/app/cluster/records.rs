//! What the nodes of a cluster tell each other through Redis: key names and the records stored
//! under them (JSON). Plain data, no I/O; `docs/design.md` ("Many nodes") describes the scheme.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use townhall_core::{Space, SpaceId};

use crate::app::config::NodeRole;
use crate::app::live::SpeakerView;

/// A node not heard from for this long is out (its record expires).
pub const NODE_TTL_MS: u64 = 5_000;
/// A space's lease and directory record expire this long after the origin last renewed them.
pub const LEASE_TTL_MS: u64 = 3_000;
/// A live space's hold outlives its origin this long: long enough for another origin to take
/// it over, after which edges stop waiting for one (renewed every round by its origin).
pub const HOLD_TTL_MS: u64 = 60_000;
/// Most spaces a node reports counts for in its heartbeat (the busiest first).
pub const MAX_REPORTED_SPACES: usize = 1_000;
/// Most directory records a node reads in a round (every origin's live, scheduled and
/// recently ended spaces; each origin publishes at most twice its `max_spaces`).
pub const MAX_DIRECTORY: usize = 10_000;

/// The set of node ids that have sent a heartbeat.
pub const NODES: &str = "th:nodes";
/// The set of space ids with a directory record.
pub const SPACES: &str = "th:spaces";

/// Where a node's heartbeat record is kept.
pub fn node_key(node: &str) -> String {
    format!("th:node:{node}")
}

/// Where a space's directory record is kept.
pub fn space_key(space: &SpaceId) -> String {
    format!("th:space:{space}")
}

/// Who holds a space (the origin's node id), expiring unless renewed.
pub fn lease_key(space: &SpaceId) -> String {
    format!("th:lease:{space}")
}

/// Who a space's room refuses (JSON [`crate::app::live::Bars`]), written by its origin when it
/// changes.
pub fn bars_key(space: &SpaceId) -> String {
    format!("th:bars:{space}")
}

/// The set of live spaces another origin could take over (a [`hold_key`] each).
pub const HELD: &str = "th:held";

/// What another origin needs to take a live space over ([`Hold`]), kept without expiry while
/// the space is live.
pub fn hold_key(space: &SpaceId) -> String {
    format!("th:hold:{space}")
}

/// A space's epoch: raised each time a node takes its lease (a fencing token).
pub fn epoch_key(space: &SpaceId) -> String {
    format!("th:epoch:{space}")
}

/// A node's heartbeat: where it is, what it does and how loaded it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub id: String,
    /// Where clients and other nodes reach it.
    pub url: String,
    /// Its part in the cluster.
    pub role: NodeRole,
    /// Listeners connected to it, all spaces.
    pub listeners: usize,
    /// Listeners it admits at most.
    pub capacity: usize,
    /// Listeners per space.
    pub spaces: BTreeMap<SpaceId, usize>,
    /// Spaces this node relays from their origins right now (each relay is one listener there).
    #[serde(default)]
    pub relaying: Vec<SpaceId>,
    /// Joins it admits per second (0 from a node that does not say).
    #[serde(default)]
    pub join_rate: u32,
    /// Draining (shutting down): it sends its listeners off and admits nobody, so the door
    /// offers it to nobody and its free places are nobody's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// When it was written (Unix ms; 0 from a node that does not say).
    #[serde(default)]
    pub at_ms: u64,
}

/// A space in the cluster's directory, written by its origin every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceRecord {
    /// The space.
    pub space: Space,
    /// The origin's node id.
    pub node: String,
    /// The origin's URL (edges pull the program from there; speakers go there).
    pub origin: String,
    /// The lease's epoch when written (0 for an ended space, which has no lease).
    pub epoch: u64,
    /// Who is on its stage (the origin's seats; an edge has none of its own).
    #[serde(default)]
    pub speakers: Vec<SpeakerView>,
    /// The digest of who its room refuses ([`crate::app::live::Bars`], kept under
    /// [`bars_key`]): an edge fetches them when it changes.
    #[serde(default)]
    pub bars: u64,
    /// Whether its origin records it now.
    #[serde(default)]
    pub recording: bool,
}

/// What an origin keeps of each live space it mixes, so that another origin can take the space
/// over when its lease lapses: the space and its room's lasting state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// The space.
    pub space: Space,
    /// Its room (roles, locks, hands of people still there, removals and blocks).
    pub room: townhall_core::room::RoomSnapshot,
    /// The origin that wrote it.
    pub node: String,
    /// The lease's epoch when written.
    pub epoch: u64,
    /// The recording in progress, as the part that would continue it elsewhere.
    #[serde(default)]
    pub recording: Option<crate::app::store::RecordingPart>,
    /// Whether it is captioned (the host's switch, or the node's `captions`): a successor
    /// captions it too.
    #[serde(default)]
    pub captions: bool,
    /// Its program clock: a successor numbers its first frame by it (the frame due when it
    /// takes over), so every edge passes the new numbers on as they are. Absent from an older
    /// origin's hold, and read as absent when unreadable (never a reason to leave a space
    /// untaken): the successor then numbers from 0 and each edge renumbers (the fallback).
    #[serde(default, deserialize_with = "lenient", skip_serializing_if = "Option::is_none")]
    pub clock: Option<HoldClock>,
}

/// A space's program clock as a hold carries it ([`townhall_media::ProgramClock`]): frame
/// `frame` was mixed at `at_ms`, and each next one 20 ms later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldClock {
    /// A frame number.
    pub frame: u32,
    /// When it was mixed, Unix ms (the origin's wall clock; nodes are NTP-synced).
    pub at_ms: u64,
}

impl From<townhall_media::ProgramClock> for HoldClock {
    fn from(c: townhall_media::ProgramClock) -> HoldClock {
        HoldClock { frame: c.frame, at_ms: c.at_ms }
    }
}

impl From<HoldClock> for townhall_media::ProgramClock {
    fn from(c: HoldClock) -> townhall_media::ProgramClock {
        townhall_media::ProgramClock::new(c.frame, c.at_ms)
    }
}

/// Reads an optional field that is `None` when it does not parse, rather than failing the
/// whole record: what another node wrote may be older, newer or damaged.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// Listeners per space summed over `nodes`, leaving out `except` (this node counts its own).
pub fn summed_counts<'a>(
    nodes: impl IntoIterator<Item = &'a NodeRecord>,
    except: &str,
) -> BTreeMap<SpaceId, usize> {
    let mut sums = BTreeMap::new();
    for node in nodes.into_iter().filter(|n| n.id != except) {
        for (space, n) in &node.spaces {
            *sums.entry(space.clone()).or_insert(0) += n;
        }
    }
    sums
}

/// The nodes that serve listeners: the edges, or every node when there are none; draining
/// nodes never (they are sending their listeners away).
pub fn serving(nodes: &[NodeRecord]) -> Vec<&NodeRecord> {
    let open: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.draining).collect();
    let edges: Vec<&NodeRecord> =
        open.iter().copied().filter(|n| n.role == NodeRole::Edge).collect();
    if edges.is_empty() { open } else { edges }
}

/// A heartbeat older than this says its node may be gone: the door sends nobody there (the
/// record itself lasts [`NODE_TTL_MS`], so the node's listeners still count meanwhile).
pub const FRESH_MS: u64 = 2_500;

/// The edges the door may send a listener to at `now_ms`: live ones, heard from within
/// [`FRESH_MS`] (one killed a moment ago is not offered for the rest of its record's life),
/// not draining.
pub fn offered(nodes: &[NodeRecord], now_ms: u64) -> impl Iterator<Item = &NodeRecord> {
    nodes.iter().filter(move |n| {
        let fresh = n.at_ms == 0 || now_ms.saturating_sub(n.at_ms) <= FRESH_MS;
        n.role == NodeRole::Edge && !n.draining && fresh
    })
}

/// How many joins a second the serving nodes admit together: the pace an origin calls its line
/// at. `None` when no node says (then the origin's own rate stands in).
pub fn join_rate(serving: &[&NodeRecord]) -> Option<u64> {
    let sum: u64 = serving.iter().map(|n| u64::from(n.join_rate)).sum();
    (sum > 0).then_some(sum)
}

/// The door weighs an edge by its last heartbeat (`townhall_shield::two_choices`).
impl townhall_shield::Load for NodeRecord {
    fn listeners(&self) -> usize {
        self.listeners
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The CSP `connect-src` sources that let the page reach `nodes` (HTTP and WebSocket).
pub fn connect_sources<'a>(nodes: impl IntoIterator<Item = &'a NodeRecord>) -> String {
    let mut out = String::new();
    for url in nodes.into_iter().map(|n| n.url.trim_end_matches('/')) {
        let ws = url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        // Only well-formed origins: a URL with a space or quote would break the header.
        if url.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b'\'' && b != b',') {
            out.push(' ');
            out.push_str(url);
            out.push(' ');
            out.push_str(&ws);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: &str, counts: &[(&str, usize)]) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            url: format!("http://{id}"),
            role: NodeRole::Edge,
            listeners: counts.iter().map(|(_, n)| n).sum(),
            capacity: 100,
            spaces: counts.iter().map(|(s, n)| (SpaceId::new(*s).expect("id"), *n)).collect(),
            relaying: Vec::new(),
            join_rate: 1_000,
            draining: false,
            at_ms: 0,
        }
    }

    #[test]
    fn a_draining_edge_is_offered_to_nobody_and_its_places_count_for_nothing() {
        let mut origin = node("o", &[]);
        origin.role = NodeRole::Origin;
        let mut leaving = node("a", &[("x", 5)]);
        leaving.draining = true;
        let staying = node("b", &[("x", 50)]);
        let all = [origin, leaving.clone(), staying];
        let ids = |v: Vec<&NodeRecord>| v.into_iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(offered(&all, 0).collect()),
            ["b"],
            "never to the draining edge, however idle"
        );
        assert_eq!(ids(serving(&all)), ["b"]);
        // Every edge draining: the others serve (the door keeps its listeners itself).
        let mut both = all.clone();
        both[2].draining = true;
        assert_eq!(ids(serving(&both)), ["o"]);
        assert_eq!(offered(&both, 0).count(), 0);
        // The flag travels; an older node's record without it reads as not draining.
        let text = serde_json::to_string(&leaving).expect("json");
        assert!(text.contains("\"draining\":true"), "{text}");
        let old = text.replace(",\"draining\":true", "");
        assert!(!serde_json::from_str::<NodeRecord>(&old).expect("parse").draining);
    }

    #[test]
    fn the_line_is_called_at_the_serving_nodes_summed_rate() {
        let mut origin = node("o", &[]);
        origin.role = NodeRole::Origin;
        let edges = [node("a", &[]), node("b", &[])];
        let all: Vec<NodeRecord> = [origin.clone()].into_iter().chain(edges).collect();
        assert_eq!(join_rate(&serving(&all)), Some(2_000), "the edges serve: theirs");
        assert_eq!(join_rate(&serving(&[origin.clone()])), Some(1_000), "no edges: the origin's");
        origin.join_rate = 0;
        assert_eq!(join_rate(&serving(&[origin])), None, "nobody says: unknown");
    }

    #[test]
    fn counts_are_summed_over_the_other_nodes() {
        let nodes =
            [node("a", &[("x", 3), ("y", 1)]), node("b", &[("x", 4)]), node("me", &[("x", 9)])];
        let sums = summed_counts(&nodes, "me");
        assert_eq!(sums.get(&SpaceId::new("x").expect("id")), Some(&7));
        assert_eq!(sums.get(&SpaceId::new("y").expect("id")), Some(&1));
    }

    #[test]
    fn the_door_weighs_an_edge_by_its_heartbeat() {
        let mut light = node("light", &[("x", 10)]);
        let mut heavy = node("heavy", &[("x", 90)]);
        (light.capacity, heavy.capacity) = (100, 100);
        let edges = [light, heavy.clone()];
        let pick = |i, j| townhall_shield::two_choices(&edges, i, j).map(|n| n.id.clone());
        assert_eq!(pick(1, 0).as_deref(), Some("light"));
        heavy.listeners = 100;
        assert!(townhall_shield::two_choices(&[heavy], 0, 0).is_none(), "full");
    }

    #[test]
    fn connect_sources_name_http_and_websocket_origins_and_skip_odd_ones() {
        let mut a = node("a", &[]);
        a.url = "https://edge-1.example.com/".into();
        let mut b = node("b", &[]);
        b.url = "http://x'; script-src *".into();
        let s = connect_sources([&a, &b]);
        assert_eq!(s, " https://edge-1.example.com wss://edge-1.example.com");
    }

    #[test]
    fn an_edge_not_heard_from_lately_is_offered_to_nobody() {
        let mut quiet = node("quiet", &[]);
        quiet.at_ms = 10_000;
        let mut fresh = node("fresh", &[]);
        fresh.at_ms = 12_000;
        let both = [quiet, fresh];
        let names = |now| offered(&both, now).map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(names(12_500), ["quiet", "fresh"]);
        assert_eq!(names(12_501), ["fresh"], "2.5 s without a word");
    }

    fn hold(clock: Option<HoldClock>) -> Hold {
        let host = townhall_core::Identity::new("host").expect("identity");
        let req = townhall_core::NewSpace { title: "Held".into(), ..Default::default() };
        let id = SpaceId::new("held").expect("id");
        let space =
            Space::create(id, req, host.clone(), townhall_core::UnixTime(100)).expect("space");
        let room = townhall_core::room::Room::with_config(
            host,
            townhall_core::room::RoomConfig::default(),
            townhall_core::UnixTime(100),
        );
        Hold {
            space,
            room: room.snapshot(),
            node: "origin-a".into(),
            epoch: 3,
            recording: None,
            captions: false,
            clock,
        }
    }

    #[test]
    fn a_hold_carries_the_program_clock_and_an_older_one_reads_without_it() {
        let clock = HoldClock { frame: 1_234, at_ms: 1_800_000_000_000 };
        let with = hold(Some(clock));
        let text = serde_json::to_string(&with).expect("json");
        assert!(text.contains(r#""clock":{"frame":1234,"at_ms":1800000000000}"#), "{text}");
        assert_eq!(serde_json::from_str::<Hold>(&text).expect("parse"), with);
        // An older origin's hold has no clock: it still parses (the successor numbers afresh).
        let older = serde_json::to_string(&hold(None)).expect("json");
        assert!(!older.contains("clock"), "{older}");
        assert_eq!(serde_json::from_str::<Hold>(&older).expect("parse").clock, None);
        // A damaged clock is no clock; the hold, and the space, still stand.
        for bad in [r#""x""#, "null", "-1", r#"{"frame":-1,"at_ms":5}"#, r#"{"frame":1}"#] {
            let text = text.replace(r#"{"frame":1234,"at_ms":1800000000000}"#, bad);
            let parsed = serde_json::from_str::<Hold>(&text).expect("a hold with a bad clock");
            assert_eq!(parsed.clock, None, "{bad}");
        }
    }

    proptest! {
        /// A hold comes from Redis, written by any node: whatever its clock field holds, the
        /// hold parses, and the clock is there exactly when it is two numbers in range.
        #[test]
        fn any_clock_field_leaves_the_hold_readable(
            frame in prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                proptest::num::f64::NORMAL.prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
            at_ms in prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Bool(true)),
            ],
            garbage in ".{0,40}",
        ) {
            let mut value = serde_json::to_value(hold(None)).expect("json");
            value["clock"] = serde_json::json!({ "frame": frame, "at_ms": at_ms });
            let parsed: Hold = serde_json::from_value(value).expect("the hold parses");
            let in_range = frame.as_u64().is_some_and(|f| f <= u64::from(u32::MAX))
                && at_ms.as_u64().is_some();
            prop_assert_eq!(parsed.clock.is_some(), in_range);
            if let Some(clock) = parsed.clock {
                // Reading a successor's first number from it never panics.
                let _ = townhall_media::ProgramClock::from(clock).at(u64::MAX);
                let _ = townhall_media::ProgramClock::from(clock).at(0);
            }
            let mut value = serde_json::to_value(hold(None)).expect("json");
            value["clock"] = serde_json::Value::from(garbage.clone());
            prop_assert!(serde_json::from_value::<Hold>(value).expect("parses").clock.is_none());
            // Anything at all where a hold should be: an error, never a panic.
            let _ = serde_json::from_str::<Hold>(&garbage);
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let n = node("a", &[("x", 3)]);
        let text = serde_json::to_string(&n).expect("json");
        assert_eq!(serde_json::from_str::<NodeRecord>(&text).expect("parse"), n);
    }
}
