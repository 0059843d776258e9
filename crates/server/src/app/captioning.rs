//! The node's captioning resources: its slots (`captions_max_spaces`, as
//! `townhall_captions::Slots`), the runs it numbers, and what it knows of its engine. The
//! rules over them (who may caption, what happens when a space goes live) are in
//! [`crate::app::captions`].

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use townhall_captions::{Slots, WorkerLine};
use townhall_core::SpaceId;

use crate::app::config::Config;
use crate::pipeline::captions::engine_command;

/// What the node knows of its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineState {
    /// Not tried yet (tried by the first space captioned).
    Unknown,
    /// It started and said it was ready.
    Ready(String),
    /// It could not start, and why.
    Missing(String),
}

/// The node's captioning: slots, runs, the engine's state.
#[derive(Debug)]
pub struct Captions {
    pub(crate) slots: Arc<Mutex<Slots<(SpaceId, u64)>>>,
    pub(crate) next_run: AtomicU64,
    pub(crate) engine: Mutex<EngineState>,
    pub(crate) command: Vec<String>,
}

impl Captions {
    /// Captioning as `config` sets it.
    pub fn new(config: &Config) -> Captions {
        Captions {
            slots: Arc::new(Mutex::new(Slots::new(config.captions_slots()))),
            next_run: AtomicU64::new(1),
            engine: Mutex::new(EngineState::Unknown),
            command: engine_command(&config.captions_engine),
        }
    }

    pub(crate) fn engine(&self) -> EngineState {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Slots taken and the limit.
    pub fn usage(&self) -> (usize, usize) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        (slots.used(), slots.max())
    }
}

/// Starts the engine's worker and waits for its first line: its name when ready, or why not.
pub(crate) async fn probe(command: &[String]) -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    let (program, args) = command.split_first().ok_or("no command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| "not ready within 60 s".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "it exited without a word".to_owned())?;
    match WorkerLine::parse(first.as_bytes()) {
        Ok(WorkerLine::Ready { engine }) => Ok(engine),
        Ok(WorkerLine::Error { message }) => Err(message),
        Ok(other) => Err(format!("unexpected first line: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
