//! The door's side of the cluster's waiting room (`townhall_shield::cluster_line`): per space
//! and lane, two counters in Redis, numbers issued and numbers called. Any node hands out
//! numbers and admits the called ones; the space's origin calls more each second. A ticket's
//! number admits once across the cluster. When Redis does not answer in time, the door says so
//! (`None`) and the node admits on its own, as a node alone does.

use std::time::Duration;

use redis::aio::ConnectionManager;
use townhall_core::SpaceId;
use townhall_shield::cluster_line::{self, LineState};
use townhall_shield::{Decision, Lane};

use crate::app::error::AppError;
use crate::app::state::AppState;
use crate::metrics::ADMISSIONS;

/// How long a door waits for Redis before admitting on its own.
const DOOR_LIMIT: Duration = Duration::from_millis(250);
/// How long a number's "used" mark is kept: a waiting ticket's lifetime.
const USED_TTL_SECS: u64 = 600;

/// Takes a number: returns it and the line's mark.
const TAKE: &str = r#"
local n = redis.call('INCR', KEYS[1])
return {n, tonumber(redis.call('GET', KEYS[2]) or '0')}
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

fn used_key(space: &SpaceId, lane: Lane, number: u64) -> String {
    format!("th:line:{space}:{}:used:{number}", lane_name(lane))
}

/// Admissions at every door of `space` so far (both lanes).
pub fn admitted_key(space: &SpaceId) -> String {
    format!("th:line:{space}:admitted")
}

/// The cluster's answer to a joiner in `lane` holding `number` (or none yet): `None` when this
/// node is on its own or Redis did not answer in time; an error for a number already admitted.
pub async fn arrive(
    app: &AppState,
    space: &SpaceId,
    lane: Lane,
    number: Option<u64>,
) -> Option<Result<Decision, AppError>> {
    let mut c = app.cluster.connection()?;
    let per_second = u64::from(app.config.joins_per_second.max(1));
    let asked = async {
        let (number, called) = match number {
            None => {
                let (n, called): (u64, u64) = redis::Script::new(TAKE)
                    .key(issued_key(space, lane))
                    .key(called_key(space, lane))
                    .invoke_async(&mut c)
                    .await?;
                (n, called)
            }
            Some(n) => {
                let called: Option<u64> =
                    redis::cmd("GET").arg(called_key(space, lane)).query_async(&mut c).await?;
                (n, called.unwrap_or(0))
            }
        };
        let decision = cluster_line::decide(number, called, per_second);
        if decision == Decision::Admit {
            // One admission per number, whichever door it comes back to.
            let first: i64 = redis::Script::new(ADMIT)
                .key(used_key(space, lane, number))
                .key(admitted_key(space))
                .arg(USED_TTL_SECS)
                .invoke_async(&mut c)
                .await?;
            if first == 0 {
                return Ok::<_, redis::RedisError>(Err(AppError::new(
                    crate::app::error::ErrorKind::BadRequest,
                    "bad_ticket",
                    "this waiting-room ticket was already used: join again for a new place",
                )));
            }
        }
        Ok(Ok((decision, number)))
    };
    let answer = match tokio::time::timeout(DOOR_LIMIT, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::warn!(%space, "cluster door: Redis refused ({e}); admitting locally");
            return None;
        }
        Err(_) => {
            tracing::warn!(%space, "cluster door: Redis too slow; admitting locally");
            return None;
        }
    };
    Some(answer.map(|(decision, _)| {
        let result = if decision == Decision::Admit { "admitted" } else { "queued" };
        metrics::counter!(ADMISSIONS, "result" => result).increment(1);
        decision
    }))
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
    let mark = redis::Script::new(MARK);
    for (called, issued, value, old) in
        [(&keys[1], &keys[0], s, signed_in.called), (&keys[3], &keys[2], a, anonymous.called)]
    {
        if value != old {
            mark.key(called).key(issued).arg(value).invoke_async::<i64>(c).await?;
        }
    }
    Ok(())
}
