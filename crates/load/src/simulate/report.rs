//! What a simulated crowd shows: a row per second (arrivals, admissions, the line, Redis
//! operations) and the summary figures, with the checks that must hold (never over capacity,
//! nobody admitted twice).

use std::fmt;

use serde::Serialize;

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the push.
    pub t: u64,
    /// Joiners arriving for the first time.
    pub arrivals: u64,
    /// Joiners hearing their first audio.
    pub admitted: u64,
    /// Joiners holding a number not yet admitted, at the start of the second.
    pub waiting: u64,
    /// Numbers issued and not called (the line as Redis holds it), after the origin's call.
    pub line_waiting: u64,
    /// Listeners on the fleet at the start of the second.
    pub listeners: u64,
    /// Redis operations of the doors (a number, a look at the line, a ticket's one use).
    pub door_ops: u64,
    /// Of those, numbers taken (the `INCR` script, the heaviest and all on one line's keys).
    pub takes: u64,
    /// Waiting tickets marked used (each a `SETBIT` in a batch, or its own operation).
    pub marks: u64,
    /// Redis operations of the nodes' rounds (heartbeats, directory, the origin's call).
    pub round_ops: u64,
    /// Joiners an edge refused (full: the cluster's count lagged), who try again.
    pub refused_at_edge: u64,
    /// Joiners who gave up.
    pub timed_out: u64,
}

/// Per-second rows, grown as time goes.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The rows, one per second from 0.
    pub seconds: Vec<Second>,
}

impl Series {
    /// The row of the second holding `at_us`.
    pub fn at(&mut self, at_us: u64) -> &mut Second {
        let s = usize::try_from(at_us / 1_000_000).unwrap_or(usize::MAX);
        while self.seconds.len() <= s {
            let t = self.seconds.len() as u64;
            self.seconds.push(Second { t, ..Second::default() });
        }
        &mut self.seconds[s]
    }
}

/// Time to first audio, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Ttfa {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The longest.
    pub max: f64,
}

/// The invariants, counted over the run (each must be 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Violations {
    /// Times an edge held more listeners than its capacity.
    pub over_capacity: u64,
    /// Joiners given a place twice.
    pub admitted_twice: u64,
    /// Numbers that admitted twice (the door's `SET NX` found them used).
    pub number_reused: u64,
}

impl Violations {
    /// Whether every check held.
    pub fn none(&self) -> bool {
        *self == Violations::default()
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Joiners in the crowd.
    pub joiners: u64,
    /// Highest arrival rate (busiest 100 ms), per second.
    pub peak_arrivals_per_s: f64,
    /// Listeners the fleet holds at most.
    pub fleet_capacity: u64,
    /// Numbers the origin calls per second at most (its `joins_per_second`).
    pub call_rate: u64,
    /// Joiners listening at the end.
    pub admitted: u64,
    /// Of those, admitted after waiting in line.
    pub admitted_after_waiting: u64,
    /// Joiners who gave up (patience ran out).
    pub timed_out: u64,
    /// Door answers "come in" (more than `admitted` when edges refused some).
    pub door_admissions: u64,
    /// Joiners refused by a full edge (the cluster's counts lag a heartbeat), who tried again.
    pub refused_at_edge: u64,
    /// Time to first audio, from the first request (waiting included).
    pub ttfa_ms: Ttfa,
    /// Most joiners waiting at once.
    pub queue_peak: u64,
    /// When the line was longest (s).
    pub queue_peak_at_s: u64,
    /// The first second from which nobody waited any more (s).
    pub queue_empty_from_s: u64,
    /// The last first audio (s after the push).
    pub last_admission_s: f64,
    /// Most first audios in one second.
    pub admitted_per_s_peak: u64,
    /// Mean first audios per second, from the push to the last admission.
    pub admitted_per_s_mean: f64,
    /// Redis operations, all kinds.
    pub redis_ops: u64,
    /// Most waiting tickets marked used in one second.
    pub marks_per_s_peak: u64,
    /// Numbers doors took in blocks and never handed out (expired).
    pub void_numbers: u64,
    /// Most places the origin held for joiners admitted and not yet counted.
    pub places_held_peak: u64,
    /// Of those, the doors'.
    pub redis_door_ops: u64,
    /// Most Redis operations in one second.
    pub redis_ops_per_s_peak: u64,
    /// Most numbers taken in one second (the `INCR` script on the line's key).
    pub redis_takes_per_s_peak: u64,
    /// Mean Redis operations per second over the run.
    pub redis_ops_per_s_mean: f64,
    /// Door visits per joiner, on average (1 = nobody came back).
    pub visits_per_joiner: f64,
    /// Listeners on the fullest and the emptiest edge at the end.
    pub edge_listeners_max_min: (u64, u64),
    /// The checks.
    pub violations: Violations,
    /// Time to first audio by quantile: (quantile, ms), for a CDF.
    pub ttfa_cdf: Vec<(f64, f64)>,
    /// Second by second.
    pub series: Vec<Second>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.ttfa_ms;
        writeln!(
            f,
            "crowd: {} joiners, peak {:.0}/s; fleet {} places, line called at <= {}/s",
            self.joiners, self.peak_arrivals_per_s, self.fleet_capacity, self.call_rate
        )?;
        writeln!(
            f,
            "admitted {} ({} after waiting), timed out {}, refused by a full edge {}",
            self.admitted, self.admitted_after_waiting, self.timed_out, self.refused_at_edge
        )?;
        writeln!(
            f,
            "time to first audio: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            t.p50, t.p99, t.p999, t.max
        )?;
        writeln!(
            f,
            "line: longest {} at {} s, empty from {} s; last admission at {:.1} s",
            self.queue_peak, self.queue_peak_at_s, self.queue_empty_from_s, self.last_admission_s
        )?;
        writeln!(
            f,
            "admitted/s: peak {}, mean {:.0}; door visits per joiner {:.2}",
            self.admitted_per_s_peak, self.admitted_per_s_mean, self.visits_per_joiner
        )?;
        writeln!(
            f,
            "Redis: {} operations ({} at the doors), peak {}/s (numbers taken: {}/s), mean {:.0}/s; {} numbers void, at most {} places held",
            self.redis_ops,
            self.redis_door_ops,
            self.redis_ops_per_s_peak,
            self.redis_takes_per_s_peak,
            self.redis_ops_per_s_mean,
            self.void_numbers,
            self.places_held_peak
        )?;
        let v = &self.violations;
        write!(
            f,
            "edges at the end: fullest {}, emptiest {}; over capacity {}, admitted twice {}, number reused {}",
            self.edge_listeners_max_min.0,
            self.edge_listeners_max_min.1,
            v.over_capacity,
            v.admitted_twice,
            v.number_reused
        )
    }
}
