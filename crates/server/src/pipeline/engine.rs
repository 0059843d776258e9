//! The media engine: a pool of mixer threads, each running its share of the live spaces'
//! programs on a 20 ms clock. A space's program comes from its mixer (on the node that owns the
//! space) or from a relay of another node's program (on an edge): either way the same sinks carry
//! it to listeners (see [`SpaceMix`]).
//!
//! Each space lives on exactly one thread, chosen when it is added (the least loaded: see
//! [`Placement`]); the rest of the server sees one [`Engine`] and never which thread.
//!
//! The mixer path is isolated from listener handling (docs/design.md §2.6): it runs on its own OS
//! threads, not on the async workers that serve HTTP and WebSocket, and talks to them only through
//! bounded channels. A flood of listeners can slow their own delivery, never the program stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use townhall_core::SpaceId;
use townhall_media::ProgramFrame;

use crate::clock;
use crate::metrics::{MIXER_LATE_TICKS, MIXER_SPACES, MIXER_SPEAKERS, MIXER_TICK_LAG, MIXER_TICKS};
use crate::pipeline::placement::{Placement, ThreadLoad};
use crate::pipeline::space_mix::SpaceMix;

const TICK: Duration = Duration::from_millis(townhall_media::FRAME_MS as u64);
/// Further behind than this, a mixer thread stops catching up and resynchronises its clock.
const MAX_CATCH_UP: Duration = Duration::from_millis(200);

enum Command {
    Add(Box<SpaceMix>),
    Remove(SpaceId),
    /// A relayed space has frames waiting: send them now, not at the next tick.
    Relayed(SpaceId),
    Stop,
}

/// Where an edge's relay hands a space's program frames: queued for the engine, which is woken
/// to send them at once (a relayed frame waits for no tick: the origin's clock already paced it).
#[derive(Clone)]
pub struct RelayInput {
    space: SpaceId,
    frames: mpsc::Sender<ProgramFrame>,
    wake: std_mpsc::Sender<Command>,
}

impl std::fmt::Debug for RelayInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayInput").field("space", &self.space).finish_non_exhaustive()
    }
}

impl RelayInput {
    /// Queues a frame; `false` when the queue is full (the frame is dropped: listeners see a
    /// gap in `seq`) or the space ended here.
    pub fn push(&self, frame: ProgramFrame) -> bool {
        self.frames.try_send(frame).is_ok()
    }

    /// Wakes the engine to send what was pushed.
    pub fn wake(&self) {
        let _ = self.wake.send(Command::Relayed(self.space.clone()));
    }

    /// Whether the space ended here (the engine let go of it).
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

/// One mixer thread as the pool holds it.
struct Shard {
    tx: std_mpsc::Sender<Command>,
    /// Speakers on the thread's spaces, as it last counted them (read when placing a space).
    speakers: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// Handle to the engine's mixer threads; dropping it stops them (each space's stream is ended).
pub struct Engine {
    shards: Vec<Shard>,
    placement: Mutex<Placement>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("threads", &self.shards.len()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts `threads` mixer threads (at least one), named `townhall-mix-N`.
    pub fn start(threads: usize) -> std::io::Result<Engine> {
        let threads = threads.max(1);
        let mut engine = Engine {
            shards: Vec::with_capacity(threads),
            placement: Mutex::new(Placement::new(threads)),
        };
        for index in 0..threads {
            // On a failure the engine dropped here stops the threads already started.
            engine.shards.push(Shard::start(index)?);
        }
        Ok(engine)
    }

    /// How many mixer threads run.
    pub fn threads(&self) -> usize {
        self.shards.len()
    }

    /// Starts running a space, on the least loaded thread (or on its thread, if it has one).
    pub fn add(&self, space: SpaceMix) {
        let thread = {
            let mut placement = self.placement();
            self.refresh(&mut placement);
            placement.place(space.feed.space().clone())
        };
        let _ = self.shards[thread].tx.send(Command::Add(Box::new(space)));
    }

    /// Ends a space's stream.
    pub fn remove(&self, space: SpaceId) {
        let Some(thread) = self.placement().remove(&space) else { return };
        let _ = self.shards[thread].tx.send(Command::Remove(space));
    }

    /// The input of a relayed space's `frames` (see [`SpaceMix::relayed`]), waking the thread
    /// the space runs on.
    pub fn relay_input(&self, space: SpaceId, frames: mpsc::Sender<ProgramFrame>) -> RelayInput {
        // A space not (or no longer) placed: its frames sender is closed or soon will be, and a
        // wake for an unknown space is ignored.
        let thread = self.placement().thread_of(&space).unwrap_or(0);
        RelayInput { space, frames, wake: self.shards[thread].tx.clone() }
    }

    /// Each thread's load (spaces placed, speakers as last counted), by thread index.
    pub fn loads(&self) -> Vec<ThreadLoad> {
        let mut placement = self.placement();
        self.refresh(&mut placement);
        placement.loads().to_vec()
    }

    fn refresh(&self, placement: &mut Placement) {
        for (index, shard) in self.shards.iter().enumerate() {
            placement.set_speakers(index, shard.speakers.load(Ordering::Relaxed));
        }
    }

    fn placement(&self) -> MutexGuard<'_, Placement> {
        // The bookkeeping stays consistent even if a holder panicked: each step is one update.
        self.placement.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for shard in &self.shards {
            let _ = shard.tx.send(Command::Stop);
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Shard {
    fn start(index: usize) -> std::io::Result<Shard> {
        let (tx, rx) = std_mpsc::channel();
        let speakers = Arc::new(AtomicUsize::new(0));
        let mixer = MixerThread::new(index, speakers.clone());
        let thread = std::thread::Builder::new()
            .name(format!("townhall-mix-{index}"))
            .spawn(move || mixer.run(&rx))?;
        Ok(Shard { tx, speakers, thread: Some(thread) })
    }
}

/// A mixer thread's metrics, labelled `thread` = its index.
struct Meters {
    ticks: metrics::Counter,
    late: metrics::Counter,
    lag: metrics::Histogram,
    spaces: metrics::Gauge,
    speakers: metrics::Gauge,
}

impl Meters {
    fn new(index: usize) -> Meters {
        let thread = index.to_string();
        Meters {
            ticks: metrics::counter!(MIXER_TICKS, "thread" => thread.clone()),
            late: metrics::counter!(MIXER_LATE_TICKS, "thread" => thread.clone()),
            lag: metrics::histogram!(MIXER_TICK_LAG, "thread" => thread.clone()),
            spaces: metrics::gauge!(MIXER_SPACES, "thread" => thread.clone()),
            speakers: metrics::gauge!(MIXER_SPEAKERS, "thread" => thread),
        }
        .shown()
    }

    /// Sets the gauges to zero, so that an idle thread shows on `/metrics` too.
    fn shown(self) -> Meters {
        self.spaces.set(0.0);
        self.speakers.set(0.0);
        self
    }
}

/// The spaces of one mixer thread and its clock.
struct MixerThread {
    spaces: HashMap<SpaceId, SpaceMix>,
    /// Shared with the pool: speakers counted after each tick.
    speakers: Arc<AtomicUsize>,
    meters: Meters,
    epoch: Instant,
    ticks: u32,
}

impl MixerThread {
    fn new(index: usize, speakers: Arc<AtomicUsize>) -> MixerThread {
        MixerThread {
            spaces: HashMap::new(),
            speakers,
            meters: Meters::new(index),
            epoch: Instant::now(),
            ticks: 0,
        }
    }

    /// Ticks every space every 20 ms, carrying out commands in between, until told to stop (or
    /// the pool is gone).
    fn run(mut self, rx: &std_mpsc::Receiver<Command>) {
        self.epoch = Instant::now();
        loop {
            if self.spaces.is_empty() && !self.idle(rx) {
                return;
            }
            self.tick_all();
            let deadline = self.epoch + TICK * self.ticks;
            if !self.serve_until(rx, deadline) {
                return;
            }
            self.keep_time(deadline);
        }
    }

    fn tick_all(&mut self) {
        let now_us = clock::now_us();
        let mut speakers = 0;
        for space in self.spaces.values_mut() {
            space.tick(now_us);
            speakers += space.speakers();
        }
        if self.speakers.swap(speakers, Ordering::Relaxed) != speakers {
            self.meters.speakers.set(speakers as f64);
        }
        self.meters.ticks.increment(1);
        self.ticks += 1;
    }

    /// With no space to run, sleeps until a command comes (a node with more cores than spaces
    /// keeps its spare threads asleep), then starts the clock afresh. `false` when the thread must
    /// stop.
    fn idle(&mut self, rx: &std_mpsc::Receiver<Command>) -> bool {
        let command = rx.recv().unwrap_or(Command::Stop);
        if !self.command(command) {
            return false;
        }
        self.epoch = Instant::now();
        self.ticks = 0;
        true
    }

    /// Until `deadline`, carries out commands as they come (relayed frames go out at once).
    /// `false` when the thread must stop.
    fn serve_until(&mut self, rx: &std_mpsc::Receiver<Command>, deadline: Instant) -> bool {
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let command = if wait.is_zero() {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(std_mpsc::TryRecvError::Empty) => return true,
                    Err(std_mpsc::TryRecvError::Disconnected) => Command::Stop,
                }
            } else {
                match rx.recv_timeout(wait) {
                    Ok(c) => c,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => return true,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => Command::Stop,
                }
            };
            if !self.command(command) {
                return false;
            }
        }
    }

    /// Carries out one command; `false` for [`Command::Stop`].
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Add(space) => {
                let id = space.feed.space().clone();
                self.spaces.insert(id, *space);
                self.meters.spaces.set(self.spaces.len() as f64);
            }
            Command::Remove(id) => {
                if let Some(space) = self.spaces.remove(&id) {
                    space.finish(clock::now_us());
                }
                self.meters.spaces.set(self.spaces.len() as f64);
            }
            Command::Relayed(id) => {
                if let Some(space) = self.spaces.get_mut(&id) {
                    space.relay_now();
                }
            }
            Command::Stop => {
                let now = clock::now_us();
                self.spaces.drain().for_each(|(_, s)| s.finish(now));
                return false;
            }
        }
        true
    }

    /// Records how late the next tick starts; a tick more than a frame late counts as late, and
    /// beyond [`MAX_CATCH_UP`] the clock starts afresh instead of rushing to catch up.
    fn keep_time(&mut self, deadline: Instant) {
        let lag = Instant::now().saturating_duration_since(deadline);
        self.meters.lag.record(lag.as_secs_f64());
        if lag > MAX_CATCH_UP {
            self.meters.late.increment(1);
            self.epoch = Instant::now();
            self.ticks = 0;
        } else if lag > TICK {
            self.meters.late.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_threads_sleep_and_stop_when_the_engine_is_dropped() {
        let engine = Engine::start(3).expect("threads start");
        assert_eq!(engine.threads(), 3);
        assert_eq!(engine.loads(), vec![ThreadLoad::default(); 3]);
        let dropped = Instant::now();
        drop(engine);
        assert!(dropped.elapsed() < Duration::from_secs(1), "every thread woke to stop");
    }
}
