//! Many nodes, one space: origins and edges meeting in Redis (`docs/design.md`, "Many nodes").
//!
//! Every second each clustered node writes its heartbeat (where it is, its load, its listeners
//! per space) and reads everyone's, so a space's listener count is the cluster's. An origin
//! holds each space it mixes under a lease with an epoch (a fencing token) and writes the
//! space's directory record; an edge reads the directory, carries every live space in it (a
//! relayed program feeding its own sinks, see [`relay`]) and ends those whose record is gone.
//! When Redis is away nothing audible changes: relays keep pulling from their origins, and the
//! next round that reaches Redis reconciles.

pub mod doors;
pub mod forward;
pub mod line;
pub(crate) mod numbering;
pub mod records;
pub mod relay;
pub mod target;
pub mod used;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use townhall_core::{SpaceId, SpaceState};

use crate::app::config::NodeRole;
use crate::app::state::AppState;
use crate::metrics::{CLUSTER_PLACES_HELD, CLUSTER_REDIS_UP};
use records::{NodeRecord, SpaceRecord};
use townhall_shield::cluster_line::Pending;
use view::Carried;

/// How often a node writes its heartbeat and reads the cluster's.
const ROUND: Duration = Duration::from_secs(1);
/// Rounds a new listener takes at most to show in the counts the origin reads: its edge writes
/// a heartbeat (a round), the origin reads it (a round), a round of margin.
const PENDING_LAG_ROUNDS: usize = 3;
/// A round that takes longer than this (Redis slow or away) is abandoned. Longer than a round:
/// on a node far behind on its own work (a join storm measured its event loop 0.3 to 0.6 s
/// late), a round is slow without Redis being away; the next round then simply starts late.
/// Redis gone (connection refused or reset) fails a round at once.
const ROUND_LIMIT: Duration = Duration::from_millis(2_500);

/// How long an edge keeps carrying a live space the directory has no word of at all (no record,
/// no hold): longer than a lease, so a Redis that restarted empty, or an origin a round late,
/// ends nothing.
const MISSING_GRACE: Duration = Duration::from_secs(5);

/// Failed rounds in a row after which a node behind Sentinels asks them for the master again.
const FOLLOW_ROUNDS: u32 = 2;

/// Takes a space's lease (raising its epoch) or renews it if this node holds it; returns the
/// epoch, or -1 when another node holds it. ARGV[3] is the highest epoch the caller knows of
/// (its own last one, or the hold's): a Redis that restarted empty numbers from there, not
/// from 1, so epochs never go back and fencing keeps its meaning.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local epoch = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3]) or 0
  if epoch <= floor then
    epoch = floor + 1
    redis.call('SET', KEYS[2], epoch)
  end
  return epoch
end
return -1
"#;

/// Lists an ended space (a record without a lease): gives the lease back if this node holds
/// it, and writes the record unless another node holds the lease now (the space lives on
/// there, and its record is that node's to write).
const LIST_ENDED: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1])
  holder = false
end
if holder then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], ARGV[4])
return 1
"#;

/// Takes a space out of the cluster (ended and forgotten here, or this node leaves): its
/// lease, record, bars and hold go, unless another node holds the lease now (then they are
/// that node's). With ARGV[3] = "keep", the hold stays: another origin takes the space over.
const WITHDRAW: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if holder then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[5], ARGV[2])
if ARGV[3] ~= 'keep' then
  redis.call('DEL', KEYS[4])
  redis.call('SREM', KEYS[6], ARGV[2])
end
return 1
"#;

/// Gives a lease back if this node holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Runs this node's part in the cluster until shutdown (returns at once on a node on its own).
pub async fn run(app: Arc<AppState>, url: String, mut shutdown: watch::Receiver<bool>) {
    let Some(redis_url) = app.config.redis.clone() else { return };
    if app.config.role == NodeRole::All {
        return;
    }
    let target = match target::RedisTarget::parse(&redis_url) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cluster: {e}");
            return;
        }
    };
    tracing::info!(node = app.cluster.node_id(), role = ?app.config.role, %url, "joining the cluster");
    app.cluster.set_url(&url);
    let mut conn: Option<ConnectionManager> = None;
    let mut published = BTreeMap::new();
    let mut pending = Pending::new(PENDING_LAG_ROUNDS);
    let mut tick = tokio::time::interval(ROUND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain = app.drain_watch();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A drain is told at once (a round now), so doors stop sending listeners here.
            Ok(()) = drain.changed() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        if conn.is_none() {
            conn = connect(&target, &app).await;
            if conn.is_none() {
                app.cluster.set_connection(None);
            }
        }
        let up = match conn.as_mut() {
            Some(c) => {
                match tokio::time::timeout(
                    ROUND_LIMIT,
                    round(&app, &url, c, &mut published, &mut pending),
                )
                .await
                {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::warn!("cluster round failed: {e}");
                        false
                    }
                    Err(_) => false,
                }
            }
            None => false,
        };
        if app.cluster.set_redis_up(up) {
            tracing::warn!(up, "cluster: Redis reachability changed");
        }
        // Behind Sentinels, a master that fails rounds may have been replaced: ask them again.
        if !up && target.follows_failover() && app.cluster.failed_rounds() >= FOLLOW_ROUNDS {
            conn = None;
        }
        metrics::gauge!(CLUSTER_REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
    if let Some(c) = conn.as_mut() {
        let _ = tokio::time::timeout(ROUND_LIMIT, leave(&app, c, &published)).await;
    }
}

/// Connects to the cluster's Redis (for Sentinels, the master they name now): the rounds'
/// connection, returned, and the door's, handed to the view.
async fn connect(target: &target::RedisTarget, app: &AppState) -> Option<ConnectionManager> {
    let client = match tokio::time::timeout(ROUND_LIMIT, target.client()).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            tracing::warn!("cluster: no Redis to connect to: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let rounds = ConnectionManagerConfig::new().set_response_timeout(Some(ROUND_LIMIT));
    let conn = tokio::time::timeout(ROUND_LIMIT, client.get_connection_manager_with_config(rounds))
        .await
        .ok()
        .and_then(Result::ok)?;
    // The door has a connection of its own: a storm of joins queues on it, not in front of the
    // heartbeat (a late heartbeat would take this node out of the cluster), and its requests
    // wait as long as the door does.
    let door = ConnectionManagerConfig::new()
        .set_response_timeout(Some(line::DOOR_LIMIT))
        .set_pipeline_buffer_size(1_024);
    let door = tokio::time::timeout(ROUND_LIMIT, client.get_connection_manager_with_config(door))
        .await
        .ok()
        .and_then(Result::ok);
    app.cluster.set_connection(door);
    Some(conn)
}

/// One round: heartbeat, the origin's leases and records, everyone's counts, an edge's spaces.
async fn round(
    app: &Arc<AppState>,
    url: &str,
    c: &mut ConnectionManager,
    published: &mut Published,
    pending: &mut Pending,
) -> redis::RedisResult<()> {
    heartbeat(app, url, c).await?;
    if app.config.role == NodeRole::Origin {
        take_over(app, c).await?;
        publish_spaces(app, url, c, published).await?;
    }
    let nodes = read_nodes(c).await?;
    app.cluster.set_nodes(&nodes);
    if app.config.role == NodeRole::Origin {
        call_lines(app, c, &nodes, published, pending).await?;
    }
    line::report_admissions(app.cluster.doors(), c).await?;
    let sums = summed_counts(&nodes, app.cluster.node_id());
    app.cluster.set_others(sums);
    let directory = read_directory(c).await?;
    if app.config.role == NodeRole::Edge {
        carry_spaces(app, c, &directory).await?;
    }
    app.cluster.set_directory(directory);
    Ok(())
}

/// The origin's second at the door: calls the waiting of each of its spaces, as many as the
/// cluster's free places (on its edges; on every node when there are none) and their summed
/// join rate allow, shared evenly between its spaces.
async fn call_lines(
    app: &AppState,
    c: &mut ConnectionManager,
    nodes: &[NodeRecord],
    published: &Published,
    pending: &mut Pending,
) -> redis::RedisResult<()> {
    if published.is_empty() {
        return Ok(());
    }
    let serving = records::serving(nodes);
    let capacity: u64 = serving.iter().map(|n| n.capacity as u64).sum();
    let listeners: u64 = serving.iter().map(|n| n.listeners as u64).sum();
    let keys: Vec<String> = published.keys().map(line::admitted_key).collect();
    let admitted: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    let admitted: u64 = admitted.into_iter().flatten().sum();
    // Joiners admitted in the last rounds are on their way: their places are not free.
    let held = pending.observe(admitted, listeners);
    metrics::gauge!(CLUSTER_PLACES_HELD).set(held as f64);
    // The cluster admits as fast as its serving nodes together do (a fleet of 43 edges at
    // 8,000/s each is 344,000/s; the origin's own rate would hold the whole line to one node's:
    // bench/simulate measured 92% of an 8M crowd giving up that way).
    let per_second =
        records::join_rate(&serving).unwrap_or_else(|| u64::from(app.shield.joins_per_second()));
    let allowance = townhall_shield::cluster_line::allowance(
        capacity,
        listeners.saturating_add(held),
        per_second,
    );
    let each = allowance / published.len() as u64;
    for space in published.keys() {
        line::call(c, space, each).await?;
    }
    Ok(())
}

/// Listeners per space on the other nodes, each edge's relay connection to the origin left
/// out (it is a node, not a person; this node's own relays are in the origin's count too).
fn summed_counts(nodes: &[NodeRecord], me: &str) -> BTreeMap<SpaceId, usize> {
    let mut sums = records::summed_counts(nodes, me);
    for space in nodes.iter().flat_map(|n| n.relaying.iter()) {
        if let Some(n) = sums.get_mut(space) {
            *n = n.saturating_sub(1);
        }
    }
    sums
}

async fn heartbeat(app: &AppState, url: &str, c: &mut ConnectionManager) -> redis::RedisResult<()> {
    let mut spaces: Vec<(SpaceId, usize)> =
        app.live_spaces().iter().map(|l| (l.id().clone(), l.feed().total_listeners())).collect();
    spaces.sort_by_key(|s| std::cmp::Reverse(s.1));
    spaces.truncate(records::MAX_REPORTED_SPACES);
    let record = NodeRecord {
        id: app.cluster.node_id().to_owned(),
        url: url.to_owned(),
        role: app.config.role,
        listeners: app.total_listeners(),
        capacity: app.shield.max_listeners(),
        spaces: spaces.into_iter().collect(),
        relaying: app.cluster.relaying(),
        join_rate: app.shield.joins_per_second(),
        draining: app.is_draining(),
        at_ms: crate::clock::now_ms(),
    };
    let json = serde_json::to_string(&record).unwrap_or_default();
    let key = records::node_key(&record.id);
    redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(json)
        .arg("PX")
        .arg(records::NODE_TTL_MS)
        .ignore()
        .cmd("SADD")
        .arg(records::NODES)
        .arg(&record.id)
        .ignore()
        .query_async(c)
        .await
}

/// Every live node's record; forgets the ids of nodes whose record expired.
async fn read_nodes(c: &mut ConnectionManager) -> redis::RedisResult<Vec<NodeRecord>> {
    let ids: Vec<String> = redis::cmd("SMEMBERS").arg(records::NODES).query_async(c).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(|id| records::node_key(id)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    let mut nodes = Vec::new();
    for (id, value) in ids.iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<NodeRecord>(&v).ok()) {
            Some(node) => nodes.push(node),
            None => {
                redis::cmd("SREM").arg(records::NODES).arg(id).query_async::<()>(c).await?;
            }
        }
    }
    Ok(nodes)
}

/// An origin's live spaces as it last published them.
type Published = BTreeMap<SpaceId, Sent>;

/// Digests of what was last written for a live space (rewritten only when they change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sent {
    bars: u64,
    hold: u64,
    /// The epoch of this node's lease (the floor when taking it again).
    epoch: u64,
}

/// An origin's spaces: for each live or scheduled space of its directory, the lease renewed
/// and the record written (a live space's bars first, when they changed); ended ones stay
/// listed (a record without a lease) while its directory keeps them; withdrawn those it
/// forgot. `published` is left holding the live spaces mixed here (the ones whose waiting
/// lines this origin calls).
async fn publish_spaces(
    app: &AppState,
    url: &str,
    c: &mut ConnectionManager,
    published: &mut Published,
) -> redis::RedisResult<()> {
    let node = app.cluster.node_id().to_owned();
    let mut live = Published::new();
    let mut listed = BTreeSet::new();
    for space in app.own_spaces() {
        let id = space.id.clone();
        let state = space.state;
        let floor = published.get(&id).map_or(0, |sent| sent.epoch);
        let Some(record) = own_record(app, space, &node, url, floor, c).await? else {
            if state == SpaceState::Live {
                // Another origin holds the lease: this node was away longer than it, and the
                // space moved. It must not publish (or mix) any more.
                tracing::warn!(space = %id, "fenced off: another origin took this space over");
                app.fence(&id);
            }
            continue;
        };
        let json = serde_json::to_string(&record).unwrap_or_default();
        if record.space.state == SpaceState::Ended {
            redis::Script::new(LIST_ENDED)
                .key(records::lease_key(&id))
                .key(records::space_key(&id))
                .key(records::SPACES)
                .key(records::hold_key(&id))
                .key(records::HELD)
                .arg(&node)
                .arg(json)
                .arg(records::LEASE_TTL_MS)
                .arg(id.as_str())
                .invoke_async::<i64>(c)
                .await?;
        } else {
            let mut sent = published.get(&id).copied().unwrap_or_default();
            if let Some(l) = app.live(&id) {
                sent = keep_live(app, c, &l, &record, sent).await?;
            }
            write_record(c, &record, json).await?;
            sent.epoch = record.epoch;
            if record.space.state == SpaceState::Live {
                live.insert(id.clone(), sent);
            }
        }
        listed.insert(id);
    }
    for gone in published.keys().filter(|id| !listed.contains(*id)) {
        withdraw(app, c, gone, Keep::Nothing).await?;
    }
    *published = live;
    Ok(())
}

/// Writes what edges and a successor origin need of a live space mixed here, where it changed
/// since `sent`: who its room refuses, and its hold (space, room and program clock; the clock
/// changes only when the frames mixed drift from it, so the hold is not rewritten every round).
async fn keep_live(
    app: &AppState,
    c: &mut ConnectionManager,
    live: &crate::app::live::LiveSpace,
    record: &SpaceRecord,
    mut sent: Sent,
) -> redis::RedisResult<Sent> {
    let id = &record.space.id;
    // Renewing the hold also tells whether Redis still has what was written (a Redis that
    // restarted empty has neither hold nor bars): then both are written again.
    let kept: i64 = redis::cmd("PEXPIRE")
        .arg(records::hold_key(id))
        .arg(records::HOLD_TTL_MS)
        .query_async(c)
        .await?;
    if kept == 0 {
        sent = Sent::default();
    }
    if sent.bars != record.bars {
        let bars = serde_json::to_string(&live.bars()).unwrap_or_default();
        redis::cmd("SET").arg(records::bars_key(id)).arg(bars).query_async::<()>(c).await?;
        sent.bars = record.bars;
    }
    let hold = records::Hold {
        space: record.space.clone(),
        room: live.room_snapshot(),
        node: record.node.clone(),
        epoch: record.epoch,
        recording: app.recordings.next_part(id),
        captions: live.captions().is_some_and(|run| run.active),
        clock: Some(live.program_clock().into()),
    };
    let hold = serde_json::to_string(&hold).unwrap_or_default();
    let digest = {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(&hold)
    };
    if sent.hold != digest {
        redis::pipe()
            .cmd("SET")
            .arg(records::hold_key(id))
            .arg(hold)
            .arg("PX")
            .arg(records::HOLD_TTL_MS)
            .ignore()
            .cmd("SADD")
            .arg(records::HELD)
            .arg(id.as_str())
            .ignore()
            .query_async::<()>(c)
            .await?;
        sent.hold = digest;
    }
    Ok(sent)
}

/// A standby origin's part: takes over each held space whose lease lapsed (its origin is gone
/// or was away longer than the lease), bringing its room back. The lease script decides
/// between origins racing for it; the epoch it raises fences the old one off.
async fn take_over(app: &Arc<AppState>, c: &mut ConnectionManager) -> redis::RedisResult<()> {
    let held: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg(records::HELD)
        .arg(records::MAX_DIRECTORY)
        .query_async(c)
        .await?;
    let ids: Vec<SpaceId> = held
        .iter()
        .filter_map(|id| SpaceId::new(id.as_str()).ok())
        .filter(|id| app.live(id).is_none())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("EXISTS").arg(records::lease_key(id));
    }
    let leased: Vec<bool> = pipe.query_async(c).await?;
    for (id, _) in ids.iter().zip(leased).filter(|(_, leased)| !leased) {
        let hold: Option<String> =
            redis::cmd("GET").arg(records::hold_key(id)).query_async(c).await?;
        let Some(hold) = hold
            .and_then(|h| serde_json::from_str::<records::Hold>(&h).ok())
            .filter(|h| &h.space.id == id)
        else {
            redis::cmd("SREM").arg(records::HELD).arg(id.as_str()).query_async::<()>(c).await?;
            continue;
        };
        let epoch: i64 = redis::Script::new(LEASE)
            .key(records::lease_key(id))
            .key(records::epoch_key(id))
            .arg(app.cluster.node_id())
            .arg(records::LEASE_TTL_MS)
            .arg(hold.epoch)
            .invoke_async(c)
            .await?;
        if epoch < 0 {
            continue;
        }
        let from = hold.node.clone();
        let space = hold.space.clone();
        let clock = hold.clock.map(townhall_media::ProgramClock::from);
        if clock.is_none() {
            // An older origin's hold: frames are numbered from 0 here, and edges renumber them.
            tracing::warn!(space = %id, %from, "the hold has no program clock: numbering afresh");
        }
        match app.adopt(hold.space, hold.room, clock) {
            Ok(()) => {
                let first = app.live(id).map(|l| l.feed().next_frame());
                tracing::warn!(space = %id, %from, epoch, ?first, "took the space over");
                // Captioned there, captioned here (before the recording's next part begins, so
                // its transcript has every word said here).
                if hold.captions
                    && let Some(live) = app.live(id)
                    && let Err(e) = app.caption(&live)
                {
                    tracing::warn!(space = %id, "captions not taken over: {}", e.message);
                }
                if let Some(part) = hold.recording {
                    // The recording goes on here, as its next part.
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Err(e) =
                            crate::app::recorder::start_part(&app, &space, Some(part)).await
                        {
                            tracing::error!(space = %space.id, "cannot continue the recording: {}", e.message);
                        }
                    });
                }
            }
            Err(e) => {
                tracing::error!(space = %id, "cannot take the space over: {}", e.message);
                redis::Script::new(RELEASE)
                    .key(records::lease_key(id))
                    .arg(app.cluster.node_id())
                    .invoke_async::<i64>(c)
                    .await?;
            }
        }
    }
    Ok(())
}

/// The record of one of this origin's spaces; `None` when another origin holds its lease (a
/// live or scheduled space must be leased to be published).
async fn own_record(
    app: &AppState,
    space: townhall_core::Space,
    node: &str,
    url: &str,
    floor: u64,
    c: &mut ConnectionManager,
) -> redis::RedisResult<Option<SpaceRecord>> {
    let epoch = if space.state == SpaceState::Ended {
        0
    } else {
        let epoch: i64 = redis::Script::new(LEASE)
            .key(records::lease_key(&space.id))
            .key(records::epoch_key(&space.id))
            .arg(node)
            .arg(records::LEASE_TTL_MS)
            .arg(floor)
            .invoke_async(c)
            .await?;
        let Ok(epoch) = u64::try_from(epoch) else {
            tracing::error!(space = %space.id, "another origin holds this space's lease: not publishing");
            return Ok(None);
        };
        epoch
    };
    let live = app.live(&space.id);
    let speakers = live.as_ref().map(|l| l.speakers_view()).unwrap_or_default();
    let bars = live.as_ref().map_or(0, |l| l.bars().digest());
    let (node, origin) = (node.to_owned(), url.to_owned());
    let recording = app.recordings.is_recording(&space.id);
    Ok(Some(SpaceRecord { space, node, origin, epoch, speakers, bars, recording }))
}

async fn write_record(
    c: &mut ConnectionManager,
    record: &SpaceRecord,
    json: String,
) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("SET")
        .arg(records::space_key(&record.space.id))
        .arg(json)
        .arg("PX")
        .arg(records::LEASE_TTL_MS)
        .ignore()
        .cmd("SADD")
        .arg(records::SPACES)
        .arg(record.space.id.as_str())
        .ignore()
        .query_async(c)
        .await
}

/// Every space in the cluster's directory (at most [`records::MAX_DIRECTORY`]); forgets the
/// ids whose record expired.
async fn read_directory(
    c: &mut ConnectionManager,
) -> redis::RedisResult<BTreeMap<SpaceId, SpaceRecord>> {
    let ids: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg(records::SPACES)
        .arg(records::MAX_DIRECTORY)
        .query_async(c)
        .await?;
    let ids: Vec<SpaceId> = ids.iter().filter_map(|id| SpaceId::new(id.as_str()).ok()).collect();
    let mut directory = BTreeMap::new();
    if ids.is_empty() {
        return Ok(directory);
    }
    let keys: Vec<String> = ids.iter().map(records::space_key).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    for (id, value) in ids.into_iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<SpaceRecord>(&v).ok()) {
            Some(record) if record.space.id == id => {
                directory.insert(id, record);
            }
            _ => {
                redis::cmd("SREM")
                    .arg(records::SPACES)
                    .arg(id.as_str())
                    .query_async::<()>(c)
                    .await?;
            }
        }
    }
    Ok(directory)
}

/// Takes an ended space out of the directory and gives its lease back.
async fn withdraw(
    app: &AppState,
    c: &mut ConnectionManager,
    space: &SpaceId,
    hold: Keep,
) -> redis::RedisResult<()> {
    redis::Script::new(WITHDRAW)
        .key(records::lease_key(space))
        .key(records::space_key(space))
        .key(records::bars_key(space))
        .key(records::hold_key(space))
        .key(records::SPACES)
        .key(records::HELD)
        .arg(app.cluster.node_id())
        .arg(space.as_str())
        .arg(match hold {
            Keep::Hold => "keep",
            Keep::Nothing => "",
        })
        .invoke_async::<i64>(c)
        .await?;
    Ok(())
}

/// What a withdrawn space leaves in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Its hold: another origin takes it over (this node leaves; the space goes on).
    Hold,
    /// Nothing (it ended or was forgotten here).
    Nothing,
}

/// An edge's spaces: carries every live space of the directory (with its room's bars, fetched
/// when they changed), follows a space to a new origin, and ends those the directory no longer
/// has live.
async fn carry_spaces(
    app: &Arc<AppState>,
    c: &mut ConnectionManager,
    directory: &BTreeMap<SpaceId, SpaceRecord>,
) -> redis::RedisResult<()> {
    for record in directory.values().filter(|r| r.space.state == SpaceState::Live) {
        carry(app, record);
        if let Some(live) = app.live(&record.space.id)
            && live.bars().digest() != record.bars
        {
            let bars: Option<String> =
                redis::cmd("GET").arg(records::bars_key(&record.space.id)).query_async(c).await?;
            // Missing is not empty (a Redis that restarted, the origin about to write them
            // again): the bars this edge has stand until the origin's arrive.
            if let Some(bars) = bars.and_then(|b| serde_json::from_str(&b).ok()) {
                live.set_bars(bars);
            }
        }
    }
    let missing: Vec<SpaceId> = app
        .live_spaces()
        .iter()
        .filter(|l| l.origin().is_some())
        .filter(|l| directory.get(l.id()).is_none_or(|r| r.space.state != SpaceState::Live))
        .map(|l| l.id().clone())
        .collect();
    // A live space between origins (its origin gone, another taking it over) has a hold and
    // no record for a few seconds: its listeners stay, and hear it again from the next origin.
    let mut held = redis::pipe();
    for id in &missing {
        held.cmd("EXISTS").arg(records::hold_key(id));
    }
    let held: Vec<bool> = if missing.is_empty() { Vec::new() } else { held.query_async(c).await? };
    let ended = directory.values().filter(|r| r.space.state == SpaceState::Ended);
    let ended: BTreeSet<&SpaceId> = ended.map(|r| &r.space.id).collect();
    let now = std::time::Instant::now();
    let mut gone = Vec::new();
    {
        let mut carried = app.cluster.carried();
        for (id, c) in carried.iter_mut() {
            if !missing.contains(id) {
                c.missing_since = None;
            }
        }
        for (id, held) in missing.into_iter().zip(held) {
            if ended.contains(&id) {
                gone.push(id);
                continue;
            }
            if held {
                continue;
            }
            // No word of it at all: ended only after a while, not at once (a Redis that
            // restarted empty says nothing of any space until the origins' next rounds).
            let since = carried.get_mut(&id).map(|c| *c.missing_since.get_or_insert(now));
            if since.is_none_or(|s| now.duration_since(s) >= MISSING_GRACE) {
                gone.push(id);
            }
        }
    }
    for id in gone {
        tracing::info!(space = %id, "no longer live in the directory: ending it here");
        app.cluster.carried().remove(&id);
        let _ = app.end(&id);
    }
    Ok(())
}

/// Carries `record`'s space here (starting its relay), or points its relay at a new origin.
fn carry(app: &Arc<AppState>, record: &SpaceRecord) {
    let id = &record.space.id;
    if let Some(carried) = app.cluster.carried().get(id) {
        carried.origin.send_if_modified(|o| {
            let changed = *o != record.origin;
            if changed {
                o.clone_from(&record.origin);
            }
            changed
        });
        if app.live(id).is_some() {
            return;
        }
    }
    match app.carry(&record.space, &record.origin) {
        Ok(Some((live, frames))) => {
            let (origin_tx, origin_rx) = watch::channel(record.origin.clone());
            let connected = Arc::new(AtomicBool::new(false));
            app.cluster.carried().insert(
                id.clone(),
                Carried { origin: origin_tx, connected: connected.clone(), missing_since: None },
            );
            tracing::info!(space = %id, origin = %record.origin, epoch = record.epoch, "carrying a space");
            tokio::spawn(relay::run(app.clone(), live, frames, origin_rx, connected));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(space = %id, "cannot carry the space: {}", e.message),
    }
}

/// Leaves the cluster on shutdown: the heartbeat and the leases go at once.
async fn leave(app: &AppState, c: &mut ConnectionManager, published: &Published) {
    // Its live spaces go on: another origin takes each over from its hold.
    for space in published.keys() {
        let _ = withdraw(app, c, space, Keep::Hold).await;
    }
    let node = app.cluster.node_id();
    let _: redis::RedisResult<()> = redis::pipe()
        .cmd("DEL")
        .arg(records::node_key(node))
        .ignore()
        .cmd("SREM")
        .arg(records::NODES)
        .arg(node)
        .ignore()
        .query_async(c)
        .await;
}
