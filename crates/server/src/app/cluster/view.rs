//! What a node knows of its cluster, as request handlers read it: its id, the other nodes'
//! listener counts, whether Redis answers, and the spaces an edge carries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use townhall_core::SpaceId;

use crate::app::cluster::forward::RoomCache;
use crate::app::cluster::records::{self, NodeRecord, SpaceRecord};
use crate::app::config::Config;

/// Rounds in a row without Redis after which the door stops asking it and admits locally.
pub const AWAY_ROUNDS: u32 = 3;

/// A space this edge carries: the origin its relay follows, and whether the relay is connected.
pub struct Carried {
    /// The origin the relay follows (changed when the space moves).
    pub origin: watch::Sender<String>,
    /// Whether the relay is connected now.
    pub connected: Arc<AtomicBool>,
    /// Since when the directory has had no word of the space (no record, no hold), if so.
    pub missing_since: Option<std::time::Instant>,
}

/// What this node knows of the cluster.
pub struct ClusterView {
    node_id: String,
    /// Listeners per space on the other nodes, from their last heartbeats (relays left out).
    others: RwLock<BTreeMap<SpaceId, usize>>,
    redis_up: AtomicBool,
    /// Rounds in a row that did not reach Redis.
    failed_rounds: AtomicU32,
    /// Live edge nodes not draining, from the last round (where the door sends listeners).
    edges: RwLock<Vec<NodeRecord>>,
    /// `connect-src` sources for the page: every live node of the cluster.
    connect_sources: RwLock<Arc<str>>,
    carried: Mutex<HashMap<SpaceId, Carried>>,
    /// The cluster's directory as the last round read it: every origin's spaces.
    directory: RwLock<Arc<BTreeMap<SpaceId, SpaceRecord>>>,
    /// The door's Redis connection (multiplexed; each join borrows a handle).
    connection: Mutex<Option<ConnectionManager>>,
    /// An edge's kept reads of its origins' rooms.
    rooms: RoomCache,
    /// The door's share of each space's waiting line.
    doors: super::doors::Doors,
    /// Waiting tickets' single use, marked in batches.
    used: super::used::UsedMarks,
    /// Where this node is reached (once it joined a cluster).
    url: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl ClusterView {
    /// The view of a node configured so (a random node id unless one is set).
    pub fn new(config: &Config) -> ClusterView {
        let node_id =
            config.node_id.clone().unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
        ClusterView {
            node_id,
            others: RwLock::new(BTreeMap::new()),
            redis_up: AtomicBool::new(false),
            failed_rounds: AtomicU32::new(0),
            edges: RwLock::new(Vec::new()),
            connect_sources: RwLock::new(Arc::from("")),
            carried: Mutex::new(HashMap::new()),
            directory: RwLock::new(Arc::new(BTreeMap::new())),
            connection: Mutex::new(None),
            rooms: RoomCache::default(),
            doors: super::doors::Doors::default(),
            used: super::used::UsedMarks::default(),
            url: std::sync::OnceLock::new(),
        }
    }

    /// The door's share of each space's waiting line.
    pub fn doors(&self) -> &super::doors::Doors {
        &self.doors
    }

    /// Waiting tickets' single use across the cluster.
    pub fn used(&self) -> &super::used::UsedMarks {
        &self.used
    }

    /// Where this node is reached, once it joined a cluster.
    pub fn url(&self) -> Option<&str> {
        self.url.get().map(String::as_str)
    }

    /// Sets where this node is reached (when it joins its cluster).
    pub fn set_url(&self, url: &str) {
        let _ = self.url.set(url.to_owned());
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Listeners of `space` on the other nodes (0 on a node on its own).
    pub fn others(&self, space: &SpaceId) -> usize {
        self.others.read().unwrap_or_else(|p| p.into_inner()).get(space).copied().unwrap_or(0)
    }

    /// Whether the last round reached Redis.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// The spaces this edge carries.
    pub fn carried(&self) -> std::sync::MutexGuard<'_, HashMap<SpaceId, Carried>> {
        self.carried.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle on the cluster's Redis (`None` on a node on its own, or once Redis has been
    /// away for [`AWAY_ROUNDS`] rounds in a row: the door then admits locally). One failed
    /// round is not enough: a node far behind on its own work fails rounds too, and admitting
    /// on its own line then would let joiners pass the cluster's.
    pub fn connection(&self) -> Option<ConnectionManager> {
        if self.failed_rounds.load(Ordering::Relaxed) >= AWAY_ROUNDS {
            return None;
        }
        self.connection.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hands the door its connection.
    pub fn set_connection(&self, c: Option<ConnectionManager>) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Rounds in a row that did not reach Redis.
    pub fn failed_rounds(&self) -> u32 {
        self.failed_rounds.load(Ordering::Relaxed)
    }

    /// Records whether the last round reached Redis; returns whether that changed.
    pub fn set_redis_up(&self, up: bool) -> bool {
        if up {
            self.failed_rounds.store(0, Ordering::Relaxed);
        } else {
            self.failed_rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.redis_up.swap(up, Ordering::Relaxed) != up
    }

    /// Sets the cluster's live nodes as the last round read them.
    pub fn set_nodes(&self, nodes: &[NodeRecord]) {
        let edges = records::offered(nodes, crate::clock::now_ms()).cloned().collect();
        *self.edges.write().unwrap_or_else(|p| p.into_inner()) = edges;
        let sources = records::connect_sources(nodes);
        let mut current = self.connect_sources.write().unwrap_or_else(|p| p.into_inner());
        // Replaced only when it changes: readers cache what they built from it by identity.
        if **current != *sources {
            *current = Arc::from(sources);
        }
    }

    /// Whether the last round saw a live edge to send listeners to.
    pub fn has_edges(&self) -> bool {
        !self.edges.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Where the door sends a listener: the URL of the less loaded of two random live edges
    /// with room, or `None` (this node serves them: no edges, or all full).
    pub fn pick_edge(&self, avoid: Option<&str>) -> Option<String> {
        let edges = self.edges.read().unwrap_or_else(|p| p.into_inner());
        let (i, j) = (rand::random::<u32>() as usize, rand::random::<u32>() as usize);
        let rest = without(&edges, avoid);
        townhall_shield::two_choices(&rest, i, j).map(|n| n.url.clone())
    }

    /// Where the door sends a listener coming back (its place was counted already): as
    /// [`pick_edge`](Self::pick_edge), or, when every edge looks full, the least loaded one.
    pub fn pick_edge_for_returning(&self, avoid: Option<&str>) -> Option<String> {
        self.pick_edge(avoid).or_else(|| {
            let edges = self.edges.read().unwrap_or_else(|p| p.into_inner());
            let load =
                |n: &&NodeRecord| (n.listeners as u128 * 1_000) / (n.capacity.max(1) as u128);
            without(&edges, avoid).into_iter().min_by_key(load).map(|n| n.url.clone())
        })
    }

    /// `connect-src` sources for the page (empty on a node on its own).
    pub fn connect_sources(&self) -> Arc<str> {
        self.connect_sources.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the other nodes' listeners per space.
    pub fn set_others(&self, sums: BTreeMap<SpaceId, usize>) {
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = sums;
    }

    /// Sets the cluster's directory as the last round read it.
    pub fn set_directory(&self, records: BTreeMap<SpaceId, SpaceRecord>) {
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(records);
    }

    /// The cluster's directory, from the last round that reached Redis (empty on a node on its
    /// own, or while Redis is away: the node then answers from what it holds itself).
    pub fn directory(&self) -> Arc<BTreeMap<SpaceId, SpaceRecord>> {
        if !self.redis_up() {
            return Arc::new(BTreeMap::new());
        }
        self.directory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// An edge's kept reads of its origins' rooms.
    pub fn rooms(&self) -> &RoomCache {
        &self.rooms
    }

    /// The cluster directory's record of `space`, if the last round saw one.
    pub fn record(&self, space: &SpaceId) -> Option<SpaceRecord> {
        self.directory().get(space).cloned()
    }

    /// Spaces whose relay is connected to their origin right now.
    pub fn relaying(&self) -> Vec<SpaceId> {
        self.carried()
            .iter()
            .filter(|(_, c)| c.connected.load(Ordering::Relaxed))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The edges but the one a joiner could not reach (`avoid`, a node's URL as the door named it).
fn without<'a>(edges: &'a [NodeRecord], avoid: Option<&str>) -> Vec<&'a NodeRecord> {
    let avoid = avoid.map(|a| a.trim_end_matches('/'));
    edges.iter().filter(|n| Some(n.url.trim_end_matches('/')) != avoid).collect()
}
