//! Many nodes, one space: origins and edges meeting in Redis (`docs/design.md`, "Many nodes").
//!
//! Every second each clustered node writes its heartbeat (where it is, its load, its listeners
//! per space) and reads everyone's, so a space's listener count is the cluster's. An origin
//! holds each space it mixes under a lease with an epoch (a fencing token) and writes the
//! space's directory record; an edge reads the directory, carries every live space in it (a
//! relayed program feeding its own sinks, see [`relay`]) and ends those whose record is gone.
//! When Redis is away nothing audible changes: relays keep pulling from their origins, and the
//! next round that reaches Redis reconciles.

pub mod line;
pub mod records;
pub mod relay;
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

/// Takes a space's lease (raising its epoch) or renews it if this node holds it; returns the
/// epoch, or -1 when another node holds it.
const LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return -1
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
    let client = match redis::Client::open(redis_url) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cluster: bad redis URL: {e}");
            return;
        }
    };
    tracing::info!(node = app.cluster.node_id(), role = ?app.config.role, %url, "joining the cluster");
    let mut conn: Option<ConnectionManager> = None;
    let mut published = BTreeSet::new();
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
            let rounds = ConnectionManagerConfig::new().set_response_timeout(Some(ROUND_LIMIT));
            conn = tokio::time::timeout(
                ROUND_LIMIT,
                client.get_connection_manager_with_config(rounds),
            )
            .await
            .ok()
            .and_then(Result::ok);
            // The door has a connection of its own: a storm of joins queues on it, not in
            // front of the heartbeat (a late heartbeat would take this node out of the
            // cluster), and its requests wait as long as the door does.
            let door = ConnectionManagerConfig::new()
                .set_response_timeout(Some(line::DOOR_LIMIT))
                .set_pipeline_buffer_size(1_024);
            let door = match conn {
                Some(_) => tokio::time::timeout(
                    ROUND_LIMIT,
                    client.get_connection_manager_with_config(door),
                )
                .await
                .ok()
                .and_then(Result::ok),
                None => None,
            };
            app.cluster.set_connection(door);
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
        metrics::gauge!(CLUSTER_REDIS_UP).set(if up { 1.0 } else { 0.0 });
    }
    if let Some(c) = conn.as_mut() {
        let _ = tokio::time::timeout(ROUND_LIMIT, leave(&app, c, &published)).await;
    }
}

/// One round: heartbeat, the origin's leases and records, everyone's counts, an edge's spaces.
async fn round(
    app: &Arc<AppState>,
    url: &str,
    c: &mut ConnectionManager,
    published: &mut BTreeSet<SpaceId>,
    pending: &mut Pending,
) -> redis::RedisResult<()> {
    heartbeat(app, url, c).await?;
    if app.config.role == NodeRole::Origin {
        publish_spaces(app, url, c, published).await?;
    }
    let nodes = read_nodes(c).await?;
    app.cluster.set_nodes(&nodes);
    if app.config.role == NodeRole::Origin {
        call_lines(app, c, &nodes, published, pending).await?;
    }
    let sums = summed_counts(&nodes, app.cluster.node_id());
    app.cluster.set_others(sums);
    if app.config.role == NodeRole::Edge {
        carry_spaces(app, c).await?;
    }
    Ok(())
}

/// The origin's second at the door: calls the waiting of each of its spaces, as many as the
/// cluster's free places (on its edges; on every node when there are none) and their summed
/// join rate allow, shared evenly between its spaces.
async fn call_lines(
    app: &AppState,
    c: &mut ConnectionManager,
    nodes: &[NodeRecord],
    published: &BTreeSet<SpaceId>,
    pending: &mut Pending,
) -> redis::RedisResult<()> {
    if published.is_empty() {
        return Ok(());
    }
    let serving = records::serving(nodes);
    let capacity: u64 = serving.iter().map(|n| n.capacity as u64).sum();
    let listeners: u64 = serving.iter().map(|n| n.listeners as u64).sum();
    let keys: Vec<String> = published.iter().map(line::admitted_key).collect();
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
    for space in published {
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

/// An origin's spaces: lease renewed and record written for each live space mixed here;
/// released and withdrawn for those that ended.
async fn publish_spaces(
    app: &AppState,
    url: &str,
    c: &mut ConnectionManager,
    published: &mut BTreeSet<SpaceId>,
) -> redis::RedisResult<()> {
    let node = app.cluster.node_id().to_owned();
    let lease = redis::Script::new(LEASE);
    let mut now = BTreeSet::new();
    for live in app.live_spaces().iter().filter(|l| l.origin().is_none()) {
        let Ok(space) = app.space(live.id()) else { continue };
        let epoch: i64 = lease
            .key(records::lease_key(&space.id))
            .key(records::epoch_key(&space.id))
            .arg(&node)
            .arg(records::LEASE_TTL_MS)
            .invoke_async(c)
            .await?;
        let Ok(epoch) = u64::try_from(epoch) else {
            tracing::error!(space = %space.id, "another origin holds this space's lease: not publishing");
            continue;
        };
        let record = SpaceRecord { space, node: node.clone(), origin: url.to_owned(), epoch };
        let json = serde_json::to_string(&record).unwrap_or_default();
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
            .query_async::<()>(c)
            .await?;
        now.insert(record.space.id);
    }
    for gone in published.difference(&now) {
        withdraw(app, c, gone).await?;
    }
    *published = now;
    Ok(())
}

/// Takes an ended space out of the directory and gives its lease back.
async fn withdraw(
    app: &AppState,
    c: &mut ConnectionManager,
    space: &SpaceId,
) -> redis::RedisResult<()> {
    redis::Script::new(RELEASE)
        .key(records::lease_key(space))
        .arg(app.cluster.node_id())
        .invoke_async::<i64>(c)
        .await?;
    redis::pipe()
        .cmd("DEL")
        .arg(records::space_key(space))
        .ignore()
        .cmd("SREM")
        .arg(records::SPACES)
        .arg(space.as_str())
        .ignore()
        .query_async(c)
        .await
}

/// An edge's spaces: carries every live space of the directory, follows a space to a new
/// origin, and ends those the directory no longer has.
async fn carry_spaces(app: &Arc<AppState>, c: &mut ConnectionManager) -> redis::RedisResult<()> {
    let ids: Vec<String> = redis::cmd("SMEMBERS").arg(records::SPACES).query_async(c).await?;
    let mut listed = BTreeSet::new();
    if !ids.is_empty() {
        let keys: Vec<String> = ids
            .iter()
            .filter_map(|id| SpaceId::new(id.as_str()).ok())
            .map(|id| records::space_key(&id))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
        for (id, value) in ids.iter().zip(values) {
            let Some(record) = value.and_then(|v| serde_json::from_str::<SpaceRecord>(&v).ok())
            else {
                redis::cmd("SREM").arg(records::SPACES).arg(id).query_async::<()>(c).await?;
                continue;
            };
            if record.space.state == SpaceState::Live {
                listed.insert(record.space.id.clone());
                carry(app, &record);
            }
        }
    }
    let gone: Vec<SpaceId> = app
        .live_spaces()
        .iter()
        .filter(|l| l.origin().is_some() && !listed.contains(l.id()))
        .map(|l| l.id().clone())
        .collect();
    for id in gone {
        tracing::info!(space = %id, "no longer in the directory: ending it here");
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
            app.cluster
                .carried()
                .insert(id.clone(), Carried { origin: origin_tx, connected: connected.clone() });
            tracing::info!(space = %id, origin = %record.origin, epoch = record.epoch, "carrying a space");
            tokio::spawn(relay::run(app.clone(), live, frames, origin_rx, connected));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(space = %id, "cannot carry the space: {}", e.message),
    }
}

/// Leaves the cluster on shutdown: the heartbeat and the leases go at once.
async fn leave(app: &AppState, c: &mut ConnectionManager, published: &BTreeSet<SpaceId>) {
    for space in published {
        let _ = withdraw(app, c, space).await;
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
