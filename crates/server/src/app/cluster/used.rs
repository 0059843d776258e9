//! A waiting ticket's single use across the cluster, many per request to Redis: the called
//! tickets that come back to this door within [`BATCH_WINDOW`] (at most [`BATCH_MAX`]) are
//! marked by one script of `SETBIT`s on per-line bitmaps (`th:line:{space}:{lane}:used`, bit
//! `n` for number `n`), each answering whether its bit was clear. At a crowd's peak this is
//! what most of a door's Redis work was (one `SET NX` per returning joiner, `bench/simulate`);
//! batched, Redis runs a few hundred scripts a second per door instead.
//!
//! Numbers come from the line's own counters (tickets are signed), so a bitmap holds at most
//! one bit per number issued: 1 MB per million joiners of a line, expiring [`USED_TTL_SECS`]
//! after its last use.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

/// How long a door gathers called tickets before marking them.
pub const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// Most tickets marked in one script.
pub const BATCH_MAX: usize = 512;
/// How long a line's bitmap is kept after its last mark (a waiting ticket's lifetime).
pub const USED_TTL_SECS: u64 = 600;
/// Tickets waiting for a batch at most (more wait to be queued).
const QUEUE: usize = 65_536;

/// Sets bit `ARGV[i]` of `KEYS[i]` for each i, returns each old bit, and keeps each bitmap for
/// `ARGV[#ARGV]` seconds more.
const MARK_USED: &str = r#"
local ttl = ARGV[#ARGV]
local seen = {}
local old = {}
for i = 1, #KEYS do
  old[i] = redis.call('SETBIT', KEYS[i], ARGV[i], 1)
  if not seen[KEYS[i]] then
    seen[KEYS[i]] = true
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
return old
"#;

static MARK_USED_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MARK_USED));

/// A ticket to mark, and where its answer goes.
struct Request {
    key: String,
    number: u64,
    conn: ConnectionManager,
    answer: oneshot::Sender<redis::RedisResult<bool>>,
}

/// This node's batcher of single-use marks (its task starts with the first mark).
#[derive(Default)]
pub struct UsedMarks {
    tx: OnceLock<mpsc::Sender<Request>>,
}

impl std::fmt::Debug for UsedMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsedMarks").finish_non_exhaustive()
    }
}

impl UsedMarks {
    /// Marks number `number` of the line whose bitmap is `key` used: `true` if this is its
    /// first use across the cluster. Batched with the other marks of the next
    /// [`BATCH_WINDOW`].
    pub async fn first_use(
        &self,
        conn: ConnectionManager,
        key: String,
        number: u64,
    ) -> redis::RedisResult<bool> {
        if number > u64::from(u32::MAX) {
            // Past a bitmap's reach (4 billion numbers on one line): not a ticket of ours.
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "number too large")));
        }
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(rx));
            tx
        });
        let (answer, heard) = oneshot::channel();
        if tx.send(Request { key, number, conn, answer }).await.is_err() {
            return Err(gone());
        }
        heard.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "the door's marker stopped"))
}

/// Gathers requests into batches and marks each batch with one script.
async fn run(mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => batch.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        mark(&mut batch).await;
    }
}

/// Marks one batch, answering each request.
async fn mark(batch: &mut Vec<Request>) {
    let Some(mut conn) = batch.first().map(|r| r.conn.clone()) else { return };
    let mut invocation = MARK_USED_SCRIPT.prepare_invoke();
    for r in batch.iter() {
        invocation.key(&r.key).arg(r.number);
    }
    invocation.arg(USED_TTL_SECS);
    let old: redis::RedisResult<Vec<i64>> = invocation.invoke_async(&mut conn).await;
    for (i, r) in batch.drain(..).enumerate() {
        let answer = match &old {
            Ok(bits) => bits.get(i).map(|&bit| bit == 0).ok_or_else(gone),
            Err(e) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "marking a ticket used failed",
                e.to_string(),
            ))),
        };
        let _ = r.answer.send(answer);
    }
}
