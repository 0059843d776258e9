//! The door's side of the cluster's waiting room (`townhall_shield::cluster_line`): per space
//! and lane, two counters in Redis, numbers issued and numbers called. Any node hands out
//! numbers and admits the called ones; the space's origin calls more each second. A ticket's
//! number admits once across the cluster. While Redis is away (the cluster's rounds fail), the
//! door says so (`None`) and the node admits on its own, as a node alone does; when only this
//! door's request is late, the joiner is told to come back.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use townhall_core::SpaceId;
use townhall_shield::cluster_line::{self, LineState};
use townhall_shield::{Decision, Lane};

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::metrics::{ADMISSIONS, CLUSTER_DOOR_SECONDS};

/// How long a door waits for the cluster's line before telling the joiner to come back
/// (`503 door_busy`, `Retry-After: 1`). A Redis that is away is known within a round and not
/// waited for: the door then admits on the node's own line. A slow answer with Redis up is
/// mostly this node's own backlog (a door storm measured answers up to 1.7 s late on an edge
/// whose event loop lagged 0.36 s, Redis itself answering in under 4 ms); admitting on the
/// node's own line then would let joiners pass the line.
pub const DOOR_LIMIT: Duration = Duration::from_secs(2);
/// How long a number's "used" mark is kept: a waiting ticket's lifetime.
const USED_TTL_SECS: u64 = 600;

/// Takes a number: returns it and the line's mark. A number already called is admitted in the
/// same step (marked used, counted: as [`ADMIT`]), so walking in costs one round trip.
/// `KEYS[3]` is the prefix of the used marks. Also returns the line's pace (-1: unknown).
const TAKE: &str = r#"
local n = redis.call('INCR', KEYS[1])
local called = tonumber(redis.call('GET', KEYS[2]) or '0')
if n <= called then
  redis.call('SET', KEYS[3] .. n, 1, 'EX', ARGV[1])
  redis.call('INCR', KEYS[4])
end
return {n, called, tonumber(redis.call('GET', KEYS[5]) or '-1')}
"#;

/// Admits a called number once across the cluster (marks it used) and counts the space's
/// admissions (what its origin holds places for until the counts show them). 1: admitted
/// now; 0: the number was used before.
const ADMIT: &str = r#"
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
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
static TAKE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE));
static ADMIT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADMIT));
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

/// A waiting joiner's return is timed as if the line moved at least this fast: a full cluster
/// calls nobody for a while, yet the first in line should look again soon.
const PACE_FLOOR: u64 = 10;

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

/// The pace to time returns by: the origin's last, or (unknown) this node's join rate.
fn pace(published: i64, configured: u64) -> u64 {
    u64::try_from(published).map_or(configured, |p| p.max(PACE_FLOOR))
}

fn used_prefix(space: &SpaceId, lane: Lane) -> String {
    format!("th:line:{space}:{}:used:", lane_name(lane))
}

fn used_key(space: &SpaceId, lane: Lane, number: u64) -> String {
    format!("{}{number}", used_prefix(space, lane))
}

/// Admissions at every door of `space` so far (both lanes).
pub fn admitted_key(space: &SpaceId) -> String {
    format!("th:line:{space}:admitted")
}

/// The cluster's answer to a joiner in `lane` holding `number` (or none yet): `None` when this
/// node is on its own or Redis is away; an error for a number already admitted, or when the
/// line did not answer in time (come back).
pub async fn arrive(
    app: &AppState,
    space: &SpaceId,
    lane: Lane,
    number: Option<u64>,
) -> Option<Result<Decision, AppError>> {
    let mut c = app.cluster.connection()?;
    let per_second = u64::from(app.config.joins_per_second.max(1));
    let started = std::time::Instant::now();
    let asked = tokio::time::timeout(DOOR_LIMIT, ask(&mut c, space, lane, number, per_second));
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
    if let (Some(n), Decision::Admit) = (number, decision) {
        let first: Result<i64, _> = ADMIT_SCRIPT
            .key(used_key(space, lane, n))
            .key(admitted_key(space))
            .arg(USED_TTL_SECS)
            .invoke_async(&mut c)
            .await;
        match first {
            Ok(0) => {
                return Some(Err(AppError::new(
                    crate::app::error::ErrorKind::BadRequest,
                    "bad_ticket",
                    "this waiting-room ticket was already used: join again for a new place",
                )));
            }
            Ok(_) => {}
            Err(_) => return Some(Err(door_busy())),
        }
    }
    metrics::histogram!(CLUSTER_DOOR_SECONDS).record(started.elapsed().as_secs_f64());
    let result = if decision == Decision::Admit { "admitted" } else { "queued" };
    metrics::counter!(ADMISSIONS, "result" => result).increment(1);
    Some(Ok(decision))
}

/// Asks the line: a new arrival takes a number (admitted at once, and marked, if already
/// called); a ticket's holder learns whether theirs is called.
async fn ask(
    c: &mut ConnectionManager,
    space: &SpaceId,
    lane: Lane,
    number: Option<u64>,
    per_second: u64,
) -> redis::RedisResult<Decision> {
    Ok(match number {
        None => {
            let (n, called, published): (u64, u64, i64) = TAKE_SCRIPT
                .key(issued_key(space, lane))
                .key(called_key(space, lane))
                .key(used_prefix(space, lane))
                .key(admitted_key(space))
                .key(pace_key(space))
                .arg(USED_TTL_SECS)
                .invoke_async(c)
                .await?;
            cluster_line::decide(n, called, pace(published, per_second))
        }
        Some(n) => {
            let (called, published): (Option<u64>, Option<i64>) = redis::cmd("MGET")
                .arg(called_key(space, lane))
                .arg(pace_key(space))
                .query_async(c)
                .await?;
            cluster_line::decide(n, called.unwrap_or(0), pace(published.unwrap_or(-1), per_second))
        }
    })
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
