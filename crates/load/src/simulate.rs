//! `simulate`: a crowd at internet scale against a fleet of edges, in virtual time (an event
//! queue, no sleeps, no sockets), driven by the door's real decisions: the cluster's waiting
//! line (`townhall_shield::cluster_line`: numbers issued per lane on arrival, the origin calling
//! once a second from the fleet's free places and its join rate, `decide` at every door visit),
//! the server's Retry-After jitter (`townhall_shield::jitter`) and the door's pick of an edge
//! (`townhall_shield::two_choices` over heartbeat counts one round old).
//!
//! What is modelled around them, and how (docs/capacity.md, "Internet scale, simulated"):
//! - a joiner asks one of the doors at random (a DNS or load balancer in front of them). With
//!   [`DoorModel::Blocks`] (the server's: `townhall_shield::cluster_door`), the door hands out
//!   numbers from blocks it takes with one `INCRBY`, decides from the line's mark as it read it
//!   (read again, one Redis script, when older than 250 ms), and marks the called tickets that
//!   come back within 2 ms used with one script. With [`DoorModel::PerArrival`] (the door before blocks: the baseline),
//!   every arrival runs the number script, every return reads the mark, and every admission
//!   costs one more operation;
//! - the origin calls from the free places less those held for joiners admitted and not yet
//!   counted (`cluster_line::Pending`), and publishes its pace, by which the doors time
//!   returns;
//! - admitted: the door's answer (`door_us`), the connection to the chosen edge (`connect_us`),
//!   the edge setting joins up one after another at its join rate, its own capacity check, and
//!   the first frame (`first_frame_us`); a full edge refuses and the client tries again from
//!   the start after the page's backoff (`townhall_shield::Backoff::CLIENT`, the documented
//!   client rule: full jitter, a uniform draw over 0.5 s doubling to 30 s);
//! - told to wait: it comes back after the jittered Retry-After, keeping its number, unless
//!   that would be past its patience: it gives up;
//! - once a second every node writes its heartbeat and reads everyone's, and the origin calls.

pub mod arrivals;
pub mod calendar;
pub mod fleet;
pub mod report;

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use townhall_shield::cluster_door::{DoorLine, Mark, Take, lane_index};
use townhall_shield::cluster_line::{self, LineState, Pending};
use townhall_shield::{Backoff, Decision, Lane, jitter, two_choices};

use crate::histogram::Histogram;
use arrivals::{Arrivals, Profile};
use calendar::Calendar;
use fleet::Fleet;
use report::{Report, Series, Ttfa};

const SECOND_US: u64 = 1_000_000;
/// How often nodes write heartbeats and the origin calls (the server's cluster round).
const ROUND_US: u64 = SECOND_US;
/// The server's spread of a Retry-After (±20%, `api.rs`).
pub const SERVER_RETRY_SPREAD: f64 = 0.2;
/// Redis operations of one edge's round: heartbeat (`SET`, `SADD`), nodes (`SMEMBERS`, `MGET`),
/// directory (`SMEMBERS`, `MGET`).
const EDGE_ROUND_OPS: u64 = 6;
/// Redis operations of the origin's round: heartbeat (2), the lease script and the directory
/// record (3), nodes (2), the lines (`MGET`); its marks are counted as written.
const ORIGIN_ROUND_OPS: u64 = 8;

/// Per-join latencies outside the queues (µs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// A door visit: request, Redis, answer.
    pub door_us: u64,
    /// From the answer to the edge starting on the connection (WebSocket upgrade).
    pub connect_us: u64,
    /// From the edge taking the listener to its first audio frame.
    pub first_frame_us: u64,
}

/// How the doors ask Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DoorModel {
    /// One number script per arrival, one read per return, one more per admission (the door
    /// before blocks).
    PerArrival,
    /// Numbers in blocks per door, the mark read at most every 250 ms (the server's door).
    Blocks,
}

/// A door's batch of single-use marks: its window and most tickets (the server's `used.rs`).
const USED_BATCH_US: u64 = 2_000;
const USED_BATCH_MAX: usize = 512;

/// Rounds the origin holds places for (the server's `PENDING_LAG_ROUNDS`).
const PENDING_LAG_ROUNDS: usize = 3;

/// A simulated crowd and fleet.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Config {
    /// How the doors ask Redis.
    pub door_model: DoorModel,
    /// Doors the crowd is spread over (0: one per edge).
    pub doors: usize,
    /// Joiners in the crowd.
    pub joiners: u64,
    /// When they arrive.
    pub profile: Profile,
    /// Share of joiners signed in (the line called first), 0.0 to 1.0.
    pub signed_in_share: f64,
    /// Edges in the fleet.
    pub edges: usize,
    /// Listeners one edge holds at most (its `max_listeners`).
    pub edge_capacity: u64,
    /// Joins one edge sets up per second.
    pub join_rate_per_edge: f64,
    /// Numbers the origin calls per second at most (its `joins_per_second`; every door uses the
    /// same figure for Retry-After).
    pub call_rate: u64,
    /// A joiner gives up when it has no audio this long after arriving (µs).
    pub patience_us: u64,
    /// Listeners leaving, per listener per second (0: everyone stays).
    pub leave_per_s: f64,
    /// Spread of the Retry-After (0.2: the server's ±20%; 1.0: full jitter).
    pub retry_spread: f64,
    /// Per-join latencies.
    pub costs: Costs,
    /// Seed of every random choice (lanes, edges, jitter).
    pub seed: u64,
    /// Keep each joiner's path (small runs, for tests).
    #[serde(skip)]
    pub trace: bool,
}

/// One joiner's path through the door (kept with `Config::trace`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trace {
    /// Its arrival order.
    pub id: u32,
    /// Waits in the signed-in line.
    pub signed_in: bool,
    /// First request (µs).
    pub arrived: u64,
    /// The number it was admitted with.
    pub number: u64,
    /// When its number was called: the later of its issue and the origin's call (µs).
    pub called_at: u64,
    /// First audio (µs), or `None`: it gave up.
    pub first_audio: Option<u64>,
    /// Times a full edge refused it.
    pub refusals: u8,
}

/// A run's report and, if asked, every joiner's path.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The figures.
    pub report: Report,
    /// Each joiner's path, by id (empty unless traced).
    pub traces: Vec<Trace>,
}

/// A joiner between two steps.
#[derive(Debug, Clone, Copy)]
struct Joiner {
    id: u32,
    signed_in: bool,
    arrived: u64,
    /// Its number in its lane's line (0: none yet).
    number: u64,
    issued_at: u64,
    /// Holds a number it was told to wait with.
    in_line: bool,
    /// The line's called mark its place was last told against (its ticket carries it: a door
    /// with an older read never tells a later place).
    seen: u64,
    waited: bool,
    refusals: u8,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A visit to the door (first or returning).
    Door(Joiner),
    /// The edge has set the join up (`u32`: which edge).
    SetUp(Joiner, u32),
    /// A listener of this edge leaves.
    Leave(u32),
}

/// A set of numbers (bits).
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets `n`; false if it was already set.
    fn insert(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !was
    }
}

/// The state of a run.
struct Sim<'a> {
    config: &'a Config,
    rng: SmallRng,
    queue: Calendar<Step>,
    fleet: Fleet,
    /// Signed-in line, anonymous line.
    lines: [LineState; 2],
    /// Each door's share of the line (blocks, the mark it read).
    doors: Vec<DoorLine>,
    /// Each door's batch of single-use marks: until when it gathers, and how many so far.
    batches: Vec<(u64, usize)>,
    /// Places the origin holds for joiners admitted and not yet counted.
    held: Pending,
    /// How many the origin called in its last round (the pace it publishes).
    pace: i64,
    /// Door visits.
    visits: u64,
    /// Marks as the origin moved them, per lane: (called, when), for traces.
    calls: [Vec<(u64, u64)>; 2],
    used: [Bits; 2],
    placed: Bits,
    /// Joiners neither listening nor gone.
    pending: u64,
    in_line: u64,
    series: Series,
    ttfa: Histogram,
    report: Report,
    traces: Vec<Trace>,
}

/// Runs the crowd of `config` to the end (everyone listening or gone).
pub fn run(config: &Config) -> Outcome {
    let arrivals = Arrivals::new(&config.profile, config.joiners);
    let mut sim = Sim {
        config,
        rng: SmallRng::seed_from_u64(config.seed),
        queue: Calendar::default(),
        fleet: Fleet::new(config.edges, config.edge_capacity, config.join_rate_per_edge),
        lines: [LineState::default(); 2],
        doors: vec![DoorLine::new(); door_count(config)],
        batches: vec![(0, 0); door_count(config)],
        held: Pending::new(PENDING_LAG_ROUNDS),
        pace: -1,
        visits: 0,
        calls: [Vec::new(), Vec::new()],
        used: [Bits::default(), Bits::default()],
        placed: Bits::default(),
        pending: 0,
        in_line: 0,
        series: Series::default(),
        ttfa: Histogram::default(),
        report: Report {
            joiners: config.joiners,
            peak_arrivals_per_s: arrivals.peak_per_second(),
            call_rate: config.call_rate,
            ..Report::default()
        },
        traces: Vec::new(),
    };
    sim.report.fleet_capacity = sim.fleet.capacity();
    let mut arrivals = arrivals.enumerate().peekable();
    let mut next_round = 0u64;
    loop {
        let arrival = arrivals.peek().map(|&(_, at)| at);
        let event = sim.queue.next_at();
        if arrival.is_none() && sim.pending == 0 {
            break;
        }
        let first = match (arrival, event) {
            (Some(a), Some(e)) => a.min(e),
            (Some(a), None) => a,
            (None, Some(e)) => e,
            // Nobody left to move (cannot happen: a pending joiner always has a next step).
            (None, None) => break,
        };
        if next_round <= first {
            sim.round(next_round);
            next_round += ROUND_US;
        } else if arrival == Some(first) {
            if let Some((id, at)) = arrivals.next() {
                sim.arrive(id, at);
            }
        } else if let Some((at, step)) = sim.queue.pop() {
            match step {
                Step::Door(j) => sim.door(at, j),
                Step::SetUp(j, edge) => sim.set_up(at, j, edge as usize),
                Step::Leave(edge) => sim.fleet.leave(edge as usize),
            }
        }
    }
    sim.finish()
}

impl Sim<'_> {
    fn schedule(&mut self, at: u64, step: Step) {
        self.queue.push(at, step);
    }

    /// The nodes' second: heartbeats, then the origin calls from what they say.
    fn round(&mut self, now: u64) {
        self.fleet.heartbeat();
        // Every door reports its admissions by the round (the server's `report_admissions`).
        let held = self.held.observe(self.report.door_admissions, self.fleet.heard());
        self.report.places_held_peak = self.report.places_held_peak.max(held);
        let allowance = cluster_line::allowance(
            self.fleet.capacity(),
            self.fleet.heard().saturating_add(held),
            self.config.call_rate,
        );
        self.pace = i64::try_from(allowance).unwrap_or(i64::MAX);
        let (s, a) = cluster_line::advance_lines(self.lines[0], self.lines[1], allowance);
        let mut marks = 0;
        for (lane, value) in [(0, s), (1, a)] {
            let line = &mut self.lines[lane];
            if value != line.called {
                // The server's MARK script: a number handed out and called stays called.
                line.called = value.max(line.called.min(line.issued));
                marks += 1;
                if self.config.trace {
                    self.calls[lane].push((line.called, now));
                }
            }
        }
        let (in_line, live) = (self.in_line, self.fleet.live());
        let line_waiting = self.lines.iter().map(LineState::waiting).sum();
        let row = self.series.at(now);
        row.round_ops += self.config.edges as u64 * EDGE_ROUND_OPS + ORIGIN_ROUND_OPS + marks;
        row.waiting = in_line;
        row.line_waiting = line_waiting;
        row.listeners = live;
    }

    fn arrive(&mut self, id: usize, at: u64) {
        self.pending += 1;
        self.series.at(at).arrivals += 1;
        let signed_in = self.rng.random::<f64>() < self.config.signed_in_share;
        let j = Joiner {
            id: u32::try_from(id).unwrap_or(u32::MAX),
            signed_in,
            arrived: at,
            number: 0,
            issued_at: at,
            in_line: false,
            seen: 0,
            waited: false,
            refusals: 0,
        };
        self.door(at, j);
    }

    /// A visit to the door at `now`: a number (or a look at the line), then in or wait.
    fn door(&mut self, now: u64, mut j: Joiner) {
        self.visits += 1;
        let lane = if j.signed_in { Lane::SignedIn } else { Lane::Anonymous };
        let arriving = j.number == 0;
        let door = self.rng.random_range(0..self.doors.len());
        let decision = match self.config.door_model {
            DoorModel::PerArrival => self.ask_per_arrival(now, &mut j, lane),
            DoorModel::Blocks => self.ask_in_blocks(now, &mut j, lane, door),
        };
        let costs = self.config.costs;
        match decision {
            Decision::Admit => {
                self.report.door_admissions += 1;
                if !self.used[lane_index(lane)].insert(j.number) {
                    self.report.violations.number_reused += 1;
                }
                // A returning ticket's one use: its own operation at the door before blocks
                // (whose number script also marked arrivals); the server's door marks the
                // called tickets of 2 ms in one script (`used.rs`), and an arrival holds none.
                match self.config.door_model {
                    DoorModel::PerArrival => self.series.at(now).door_ops += 1,
                    DoorModel::Blocks if !arriving => self.mark_used(now, door),
                    DoorModel::Blocks => {}
                }
                if j.in_line {
                    j.in_line = false;
                    j.waited = true;
                    self.in_line -= 1;
                }
                let edge = self.pick_edge();
                // Every join reaches its edge a fixed time after its door visit, and visits are
                // handled in time order, so the edge's joins are set up in arrival order.
                let reach = now + costs.door_us + costs.connect_us;
                let done = self.fleet.set_up(edge, reach);
                self.schedule(done, Step::SetUp(j, edge as u32));
            }
            Decision::Wait { number, position, retry_after } => {
                j.seen = number.saturating_sub(position);
                if !j.in_line {
                    j.in_line = true;
                    self.in_line += 1;
                }
                let pause = jitter(retry_after, self.config.retry_spread, self.rng.random());
                self.come_back(now + costs.door_us + micros(pause), j);
            }
        }
    }

    /// A called ticket's single use at door `d`: one script per batch (the server's `used.rs`:
    /// the tickets of 2 ms, at most 512).
    fn mark_used(&mut self, now: u64, d: usize) {
        self.series.at(now).marks += 1;
        let (until, marks) = &mut self.batches[d];
        if now < *until && *marks < USED_BATCH_MAX {
            *marks += 1;
            return;
        }
        (*until, *marks) = (now + USED_BATCH_US, 1);
        self.series.at(now).door_ops += 1;
    }

    /// The door before blocks: a number script per arrival, a read per return.
    fn ask_per_arrival(&mut self, now: u64, j: &mut Joiner, lane: Lane) -> Decision {
        let row = self.series.at(now);
        row.door_ops += 1;
        let line = &mut self.lines[lane_index(lane)];
        if j.number == 0 {
            row.takes += 1;
            line.issued += 1;
            j.number = line.issued;
            j.issued_at = now;
        }
        let pace = u64::try_from(self.pace).unwrap_or(self.config.call_rate);
        cluster_line::decide(j.number, line.called, pace)
    }

    /// The server's door: numbers from the door's block, the mark as the door last read it.
    fn ask_in_blocks(&mut self, now: u64, j: &mut Joiner, lane: Lane, d: usize) -> Decision {
        let at = Duration::from_micros(now);
        let i = lane_index(lane);
        let arriving = j.number == 0;
        if arriving {
            j.issued_at = now;
            j.number = match self.doors[d].numbers[i].take(at) {
                Take::Number(n) => n,
                Take::Refill(len) => {
                    let row = self.series.at(now);
                    row.door_ops += 1;
                    row.takes += 1;
                    self.lines[i].issued += len;
                    self.doors[d].numbers[i].refilled(self.lines[i].issued, len, at)
                }
            };
        }
        let door = &mut self.doors[d];
        if !door.mark.fresh(at) {
            // One script: the door's admissions added, both marks and the pace read.
            self.series.at(now).door_ops += 1;
            let (_, void) = door.report(at);
            self.report.void_numbers += void[0] + void[1];
            let called = [self.lines[0].called, self.lines[1].called];
            door.mark = Mark { called, pace: self.pace, read_at: Some(at) };
        }
        door.decide(lane, j.number, j.seen, arriving, self.config.call_rate)
    }

    /// The edge for an admitted joiner: the door's pick of two by their last heartbeats, or,
    /// when both look full, the door's own node (any edge).
    fn pick_edge(&mut self) -> usize {
        let n = self.fleet.edges.len();
        let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
        match two_choices(&self.fleet.edges, a, b) {
            Some(edge) if std::ptr::eq(edge, &self.fleet.edges[a]) => a,
            Some(_) => b,
            None => self.rng.random_range(0..n),
        }
    }

    /// Schedules `j`'s next visit at `at`, unless its patience runs out first.
    fn come_back(&mut self, at: u64, mut j: Joiner) {
        let deadline = j.arrived + self.config.patience_us;
        if at <= deadline {
            self.schedule(at, Step::Door(j));
            return;
        }
        if j.in_line {
            j.in_line = false;
            self.in_line -= 1;
        }
        self.pending -= 1;
        self.report.timed_out += 1;
        self.series.at(deadline).timed_out += 1;
        self.trace(j, None);
    }

    /// The edge has set `j`'s join up at `now`: its capacity check, then first audio.
    fn set_up(&mut self, now: u64, mut j: Joiner, edge: usize) {
        if !self.fleet.take_place(edge) {
            self.report.refused_at_edge += 1;
            self.series.at(now).refused_at_edge += 1;
            // The page's reconnect (full jitter over 0.5 s doubling to 30 s), then a new join
            // (a new number).
            let mut backoff = Backoff::CLIENT.after_failures(u32::from(j.refusals));
            let pause = micros(backoff.next_delay(self.rng.random(), None));
            j.refusals = j.refusals.saturating_add(1);
            j.number = 0;
            j.seen = 0;
            self.come_back(now + pause, j);
            return;
        }
        let e = &self.fleet.edges[edge];
        if e.live > e.capacity {
            self.report.violations.over_capacity += 1;
        }
        if !self.placed.insert(u64::from(j.id)) {
            self.report.violations.admitted_twice += 1;
        }
        self.pending -= 1;
        let audio = now + self.config.costs.first_frame_us;
        let ttfa = audio - j.arrived;
        self.ttfa.record(ttfa);
        let r = &mut self.report;
        r.admitted += 1;
        r.admitted_after_waiting += u64::from(j.waited);
        r.ttfa_ms.max = r.ttfa_ms.max.max(ttfa as f64 / 1_000.0);
        r.last_admission_s = r.last_admission_s.max(audio as f64 / 1e6);
        self.series.at(audio).admitted += 1;
        if self.config.leave_per_s > 0.0 {
            let u: f64 = self.rng.random();
            let stay = -(1.0 - u).ln() / self.config.leave_per_s;
            self.schedule(now + (stay * 1e6) as u64, Step::Leave(edge as u32));
        }
        self.trace(j, Some(audio));
    }

    fn trace(&mut self, j: Joiner, first_audio: Option<u64>) {
        if !self.config.trace {
            return;
        }
        let calls = &self.calls[usize::from(!j.signed_in)];
        let called = calls.partition_point(|&(mark, _)| mark < j.number);
        let called_at = calls.get(called).map_or(u64::MAX, |&(_, at)| at).max(j.issued_at);
        let id = j.id as usize;
        if self.traces.len() <= id {
            let blank = Trace {
                id: 0,
                signed_in: false,
                arrived: 0,
                number: 0,
                called_at: 0,
                first_audio: None,
                refusals: 0,
            };
            self.traces.resize(id + 1, blank);
        }
        self.traces[id] = Trace {
            id: j.id,
            signed_in: j.signed_in,
            arrived: j.arrived,
            number: j.number,
            called_at,
            first_audio,
            refusals: j.refusals,
        };
    }

    fn finish(mut self) -> Outcome {
        let mut r = self.report;
        let q = |x| self.ttfa.quantile(x) as f64 / 1_000.0;
        r.ttfa_ms = Ttfa { p50: q(0.5), p99: q(0.99), p999: q(0.999), max: r.ttfa_ms.max };
        r.ttfa_cdf = (0..=200).map(|i| f64::from(i) / 200.0).map(|x| (x, q(x))).collect();
        let rows = std::mem::take(&mut self.series.seconds);
        let peak = rows.iter().max_by_key(|s| (s.waiting, std::cmp::Reverse(s.t)));
        (r.queue_peak, r.queue_peak_at_s) = peak.map_or((0, 0), |s| (s.waiting, s.t));
        r.queue_empty_from_s = rows.iter().rposition(|s| s.waiting > 0).map_or(0, |i| i as u64 + 1);
        r.admitted_per_s_peak = rows.iter().map(|s| s.admitted).max().unwrap_or(0);
        r.admitted_per_s_mean = r.admitted as f64 / r.last_admission_s.max(1.0);
        r.redis_door_ops = rows.iter().map(|s| s.door_ops).sum();
        r.redis_ops = r.redis_door_ops + rows.iter().map(|s| s.round_ops).sum::<u64>();
        r.redis_ops_per_s_peak = rows.iter().map(|s| s.door_ops + s.round_ops).max().unwrap_or(0);
        r.redis_takes_per_s_peak = rows.iter().map(|s| s.takes).max().unwrap_or(0);
        r.marks_per_s_peak = rows.iter().map(|s| s.marks).max().unwrap_or(0);
        r.redis_ops_per_s_mean = r.redis_ops as f64 / rows.len().max(1) as f64;
        r.visits_per_joiner = self.visits as f64 / r.joiners.max(1) as f64;
        let live = self.fleet.edges.iter().map(|e| e.live);
        r.edge_listeners_max_min = (live.clone().max().unwrap_or(0), live.min().unwrap_or(0));
        r.series = rows;
        Outcome { report: r, traces: self.traces }
    }
}

/// Doors the crowd is spread over.
fn door_count(config: &Config) -> usize {
    if config.doors == 0 { config.edges } else { config.doors }.max(1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The largest crowd of `config`'s profile (same window and shape) the fleet takes with nobody
/// timing out, to within `precision` (relative), and why a larger one fails.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Burst {
    /// The largest crowd absorbed.
    pub joiners: u64,
    /// Its peak arrival rate, per second.
    pub peak_arrivals_per_s: f64,
    /// The smallest crowd tried that was not absorbed, and its timed out joiners.
    pub failed_at: (u64, u64),
    /// Why that one failed: "fleet full" (no place left) or "line too slow" (patience ran out
    /// while places were free).
    pub bound: String,
    /// Runs it took.
    pub runs: u32,
}

/// Bisects on the number of joiners (keeping the profile) for the largest crowd absorbed.
pub fn largest_burst(config: &Config, precision: f64) -> Burst {
    let mut runs = 0;
    let mut attempt = |joiners: u64| {
        runs += 1;
        let c = Config { joiners, trace: false, ..config.clone() };
        run(&c).report
    };
    let (mut lo, mut hi) = (0u64, config.joiners.max(1));
    let ceiling = config.joiners.max(1).saturating_mul(64);
    let mut failed = loop {
        let r = attempt(hi);
        if r.timed_out > 0 || hi >= ceiling {
            break r;
        }
        lo = hi;
        hi = hi.saturating_mul(2);
    };
    if failed.timed_out == 0 {
        // Even 64 times the crowd got in (listeners leave fast enough): no bound found.
        return Burst {
            joiners: hi,
            peak_arrivals_per_s: failed.peak_arrivals_per_s,
            failed_at: (0, 0),
            bound: "not reached".to_owned(),
            runs,
        };
    }
    while (hi - lo) as f64 > precision * hi as f64 && hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let r = attempt(mid);
        if r.timed_out > 0 {
            (hi, failed) = (mid, r);
        } else {
            lo = mid;
        }
    }
    let full = failed.admitted >= failed.fleet_capacity;
    Burst {
        joiners: lo,
        peak_arrivals_per_s: Arrivals::new(&config.profile, lo).peak_per_second(),
        failed_at: (hi, failed.timed_out),
        bound: if full { "fleet full" } else { "line too slow" }.to_owned(),
        runs,
    }
}

#[cfg(test)]
mod tests;
