//! The door's side of the cluster's waiting room (`townhall_shield::cluster_line`): per space
//! and lane, two counters in Redis, numbers issued and numbers called. Any node hands out
//! numbers and admits the called ones; the space's origin calls more each second. A ticket's
//! number admits once across the cluster. While Redis is away (the cluster's rounds fail), the
//! door says so (`None`) and the node admits on its own, as a node alone does; when only this
//! door's request is late, the joiner is told to come back.
//!
//! A door asks Redis little per joiner (`townhall_shield::cluster_door`): it takes numbers in
//! blocks sized to its arrivals (`INCRBY`), decides from the line's mark read at most 250 ms
//! ago (one read for every joiner meanwhile, which also adds the arrivals it admitted to the
//! space's admission count), and marks a waiting ticket used only when it admits.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use townhall_core::SpaceId;
use townhall_shield::cluster_door::{DoorLine, Mark, Take, lane_index};
use townhall_shield::cluster_line::{self, LineState};
use townhall_shield::{Decision, Lane};

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::metrics::{ADMISSIONS, CLUSTER_DOOR_SECONDS, CLUSTER_VOID_NUMBERS};

/// How long a door waits for the cluster's line before telling the joiner to come back
/// (`503 door_busy`, `Retry-After: 1`). A Redis that is away is known within a round and not
/// waited for: the door then admits on the node's own line. A slow answer with Redis up is
/// mostly this node's own backlog (a door storm measured answers up to 1.7 s late on an edge
/// whose event loop lagged 0.36 s, Redis itself answering in under 4 ms); admitting on the
/// node's own line then would let joiners pass the line.
pub const DOOR_LIMIT: Duration = Duration::from_secs(2);

/// Adds the door's admissions to the space's count (`ARGV[1]`, may be 0) and reads the line:
/// both lanes' called marks and the pace (-1: unknown).
const READ: &str = r#"
local n = tonumber(ARGV[1])
if n > 0 then redis.call('INCRBY', KEYS[1], n) end
return {tonumber(redis.call('GET', KEYS[2]) or '0'), tonumber(redis.call('GET', KEYS[3]) or '0'),
  tonumber(redis.call('GET', KEYS[4]) or '-1')}
"#;

/// Sets a line's mark; a number already handed out and called stays called (the mark never
/// goes below the lesser of the old mark and the last number issued), an unused lead may be
/// withdrawn.
const MARK: &str = r#"
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
local mark = math.max(tonumber(ARGV[1]), math.min(old, issued))
redis.call('SET', KEYS[1], mark)
return mark
"#;

/// The scripts, hashed once (a `Script` computes its SHA-1 when made; joins run them often).
static READ_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(READ));
static MARK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MARK));

fn lane_name(lane: Lane) -> &'static str {
    match lane {
        Lane::SignedIn => "signed-in",
        Lane::Anonymous => "anonymous",
    }
}

fn issued_key(space: &SpaceId, lane: Lane) -> String {
    format!("th:line:{space}:{}:issued", lane_name(lane))
}

fn called_key(space: &SpaceId, lane: Lane) -> String {
    format!("th:line:{space}:{}:called", lane_name(lane))
}

/// How many the origin called last second (both lines): the line's pace, from which a
/// waiting joiner is told when to come back.
fn pace_key(space: &SpaceId) -> String {
    format!("th:line:{space}:pace")
}

/// How long a published pace holds without a new one.
const PACE_TTL_SECS: u64 = 5;

/// The door could not ask the cluster's line in time: come back in a second.
fn door_busy() -> AppError {
    metrics::counter!(ADMISSIONS, "result" => "door_busy").increment(1);
    AppError::new(
        crate::app::error::ErrorKind::Unavailable,
        "door_busy",
        "the waiting line did not answer in time: come back (with your ticket) after Retry-After",
    )
    .retry_after(Duration::from_secs(1))
}

/// The bitmap of a line's numbers used (bit `n`: number `n` admitted).
fn used_key(space: &SpaceId, lane: Lane) -> String {
    format!("th:line:{space}:{}:used", lane_name(lane))
}

/// Admissions at every door of `space` so far (both lanes).
pub fn admitted_key(space: &SpaceId) -> String {
    format!("th:line:{space}:admitted")
}

/// The cluster's answer to a joiner in `lane` holding `number` (or none yet) whose ticket was
/// told its place against the line's called mark `seen` (0: none): `None` when this node is on
/// its own or Redis is away; an error for a number already admitted, or when the line did not
/// answer in time (come back).
pub async fn arrive(
    app: &AppState,
    space: &SpaceId,
    lane: Lane,
    number: Option<u64>,
    seen: u64,
) -> Option<Result<Decision, AppError>> {
    let mut c = app.cluster.connection()?;
    let per_second = u64::from(app.config.joins_per_second.max(1));
    let started = std::time::Instant::now();
    let door = app.cluster.doors().line(space);
    let asked = tokio::time::timeout(
        DOOR_LIMIT,
        ask(&mut c, &door, app.cluster.doors().now(), space, (lane, number, seen), per_second),
    );
    let decision = match asked.await {
        Ok(Ok(decision)) => decision,
        // Redis answers the cluster's rounds but not this door in time: most likely this node
        // is behind. Admitting on the node's own line would let this joiner pass the line (and
        // tell one waiting a new, later place); come back instead, with the same ticket.
        Ok(Err(e)) => {
            tracing::debug!(%space, "cluster door: Redis refused ({e})");
            return Some(Err(door_busy()));
        }
        Err(_) => {
            tracing::debug!(%space, "cluster door: no answer from Redis in time");
            return Some(Err(door_busy()));
        }
    };
    // A called ticket admits once, whichever door it comes back to. Not cut short by the
    // door's deadline: a mark made but not heard of would refuse its own holder on return
    // (the connection's own response timeout bounds it).
    // Marked with the door's other called tickets of the same 2 ms (`used.rs`); the admission
    // is counted with the door's next read, as an arrival's is.
    if let (Some(n), Decision::Admit) = (number, decision) {
        let first = app.cluster.used().first_use(c.clone(), used_key(space, lane), n).await;
        match first {
            Ok(true) => door.lock().await.admitted += 1,
            Ok(false) => {
                return Some(Err(AppError::new(
                    crate::app::error::ErrorKind::BadRequest,
                    "bad_ticket",
                    "this waiting-room ticket was already used: join again for a new place",
                )));
            }
            Err(_) => return Some(Err(door_busy())),
        }
    }
    metrics::histogram!(CLUSTER_DOOR_SECONDS).record(started.elapsed().as_secs_f64());
    let result = if decision == Decision::Admit { "admitted" } else { "queued" };
    metrics::counter!(ADMISSIONS, "result" => result).increment(1);
    Some(Ok(decision))
}

/// Asks the line for a joiner `(lane, number, seen)`: a new arrival takes a number from the
/// door's block (a new block when it is used up); a ticket's holder brings its own, and the
/// mark its place was told against. Either is decided from the line's mark as the door read
/// it, read again when older than `MARK_FRESH` (one read for every joiner meanwhile: they wait
/// on the door's lock), or from the ticket's, when later.
async fn ask(
    c: &mut ConnectionManager,
    door: &tokio::sync::Mutex<DoorLine>,
    now: Duration,
    space: &SpaceId,
    (lane, number, seen): (Lane, Option<u64>, u64),
    per_second: u64,
) -> redis::RedisResult<Decision> {
    let mut line = door.lock().await;
    let (number, arriving) = match number {
        Some(n) => (n, false),
        None => match line.numbers[lane_index(lane)].take(now) {
            Take::Number(n) => (n, true),
            Take::Refill(len) => {
                let last: u64 = redis::cmd("INCRBY")
                    .arg(issued_key(space, lane))
                    .arg(len)
                    .query_async(c)
                    .await?;
                (line.numbers[lane_index(lane)].refilled(last, len, now), true)
            }
        },
    };
    if !line.mark.fresh(now) {
        read(c, space, &mut line, now).await?;
    }
    Ok(line.decide(lane, number, seen, arriving, per_second))
}

/// Reads the line's marks for `line`, adding the arrivals it admitted since to the space's
/// admission count in the same step (kept for the next read if that fails).
async fn read(
    c: &mut ConnectionManager,
    space: &SpaceId,
    line: &mut DoorLine,
    now: Duration,
) -> redis::RedisResult<()> {
    let (admitted, void) = line.report(now);
    metrics::counter!(CLUSTER_VOID_NUMBERS).increment(void[0] + void[1]);
    let read: redis::RedisResult<(u64, u64, i64)> = READ_SCRIPT
        .key(admitted_key(space))
        .key(called_key(space, Lane::SignedIn))
        .key(called_key(space, Lane::Anonymous))
        .key(pace_key(space))
        .arg(admitted)
        .invoke_async(c)
        .await;
    match read {
        Ok((signed_in, anonymous, pace)) => {
            line.mark = Mark { called: [signed_in, anonymous], pace, read_at: Some(now) };
            Ok(())
        }
        Err(e) => {
            line.admitted += admitted;
            Err(e)
        }
    }
}

/// Adds what every door line of this node admitted and has not reported yet to the spaces'
/// admission counts (each round, so the origin sees a quiet door's last admissions too).
pub async fn report_admissions(
    doors: &super::doors::Doors,
    c: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    for (space, door) in doors.all() {
        let Ok(mut line) = door.try_lock() else { continue };
        if line.admitted == 0 {
            continue;
        }
        let admitted = std::mem::take(&mut line.admitted);
        let added: redis::RedisResult<()> =
            redis::cmd("INCRBY").arg(admitted_key(&space)).arg(admitted).query_async(c).await;
        if let Err(e) = added {
            line.admitted += admitted;
            return Err(e);
        }
    }
    Ok(())
}

/// The origin's second: calls as many numbers of `space`'s lines as `allowance` allows.
pub async fn call(
    c: &mut ConnectionManager,
    space: &SpaceId,
    allowance: u64,
) -> redis::RedisResult<()> {
    let keys = [
        issued_key(space, Lane::SignedIn),
        called_key(space, Lane::SignedIn),
        issued_key(space, Lane::Anonymous),
        called_key(space, Lane::Anonymous),
    ];
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(c).await?;
    let at = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
    let signed_in = LineState { issued: at(0), called: at(1) };
    let anonymous = LineState { issued: at(2), called: at(3) };
    let (s, a) = cluster_line::advance_lines(signed_in, anonymous, allowance);
    // The pace doors time returns by; gone with the origin (then each door's own rate).
    redis::cmd("SET")
        .arg(pace_key(space))
        .arg(allowance)
        .arg("EX")
        .arg(PACE_TTL_SECS)
        .query_async::<()>(c)
        .await?;
    let mark = &*MARK_SCRIPT;
    for (called, issued, value, old) in
        [(&keys[1], &keys[0], s, signed_in.called), (&keys[3], &keys[2], a, anonymous.called)]
    {
        if value != old {
            mark.key(called).key(issued).arg(value).invoke_async::<i64>(c).await?;
        }
    }
    Ok(())
}
