//! The edges of a simulated fleet: each holds at most `capacity` listeners and sets up joins
//! one after another at its join rate (a FIFO server: a join that finds the edge busy waits).
//! What the rest of the cluster knows of an edge is its last heartbeat (`heard`), as in the
//! server: the door and the origin read counts up to one heartbeat old.

use townhall_shield::Load;

/// One edge.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Listeners connected now.
    pub live: u64,
    /// Listeners it admits at most (its `max_listeners`).
    pub capacity: u64,
    /// Listeners as its last heartbeat said.
    pub heard: u64,
    /// Most listeners it ever held.
    pub peak: u64,
    /// When it is free to set up the next join (µs).
    free_at: u64,
}

impl Load for Edge {
    fn listeners(&self) -> usize {
        usize::try_from(self.heard).unwrap_or(usize::MAX)
    }
    fn capacity(&self) -> usize {
        usize::try_from(self.capacity).unwrap_or(usize::MAX)
    }
}

/// The edges of the fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The edges, by index.
    pub edges: Vec<Edge>,
    /// CPU time one join costs an edge (µs): one over its join rate.
    service_us: u64,
}

impl Fleet {
    /// `edges` empty edges of `capacity` listeners, each setting up `join_rate` joins a second.
    pub fn new(edges: usize, capacity: u64, join_rate: f64) -> Fleet {
        let edge = Edge { live: 0, capacity, heard: 0, peak: 0, free_at: 0 };
        let service_us = (1e6 / join_rate.max(1e-3)).round().max(1.0) as u64;
        Fleet { edges: vec![edge; edges], service_us }
    }

    /// Every edge sends its heartbeat: the cluster now hears today's counts.
    pub fn heartbeat(&mut self) {
        for e in &mut self.edges {
            e.heard = e.live;
        }
    }

    /// A join reaching edge `e` at `now` is set up at the returned instant (after those ahead
    /// of it on that edge).
    pub fn set_up(&mut self, e: usize, now: u64) -> u64 {
        let edge = &mut self.edges[e];
        let done = edge.free_at.max(now) + self.service_us;
        edge.free_at = done;
        done
    }

    /// The edge's own capacity check as a listener connects with its ticket (the server's
    /// `Shield::has_room`: fewer than `max_listeners` connected): takes the place if there is
    /// one.
    pub fn take_place(&mut self, e: usize) -> bool {
        let edge = &mut self.edges[e];
        if edge.live >= edge.capacity {
            return false;
        }
        edge.live += 1;
        edge.peak = edge.peak.max(edge.live);
        true
    }

    /// A listener of edge `e` leaves.
    pub fn leave(&mut self, e: usize) {
        let edge = &mut self.edges[e];
        edge.live = edge.live.saturating_sub(1);
    }

    /// Listeners connected now, all edges.
    pub fn live(&self) -> u64 {
        self.edges.iter().map(|e| e.live).sum()
    }

    /// Listeners as the last heartbeats said, all edges.
    pub fn heard(&self) -> u64 {
        self.edges.iter().map(|e| e.heard).sum()
    }

    /// Listeners the fleet admits at most.
    pub fn capacity(&self) -> u64 {
        self.edges.iter().map(|e| e.capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_sets_up_joins_one_after_another_and_never_exceeds_capacity() {
        let mut f = Fleet::new(2, 2, 1_000.0);
        assert_eq!(f.set_up(0, 0), 1_000);
        assert_eq!(f.set_up(0, 0), 2_000, "waits for the one ahead");
        assert_eq!(f.set_up(1, 0), 1_000, "another edge is free");
        assert_eq!(f.set_up(0, 5_000), 6_000, "an idle edge starts at once");
        assert!(f.take_place(0) && f.take_place(0));
        assert!(!f.take_place(0), "full");
        assert_eq!((f.live(), f.heard()), (2, 0));
        f.heartbeat();
        assert_eq!(f.heard(), 2);
        f.leave(0);
        assert!(f.take_place(0));
        assert_eq!(f.edges[0].peak, 2);
    }
}
