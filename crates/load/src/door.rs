//! Back through the door, as the documented client rules have it (`docs/protocol.md`,
//! "Reconnecting"): a listener whose node sends it off (a draining node's `bye`) or whose
//! connection is lost waits by [`Backoff::CLIENT`] (full jitter, `Retry-After` or the `bye`'s
//! `reconnect_after_ms` as a floor), asks `POST /api/v1/spaces/{id}/join` on the URL it first
//! used, and listens on the node the answer names. The page does the same (`web/listen.js`).

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use townhall_shield::Backoff;

use crate::http::{self, ReadBuf};
use crate::target::Target;

/// Where a listener goes back to: the node it first joined at, and the space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Door {
    /// The URL first used (any node of a cluster is a door).
    pub target: Target,
    /// Other doors to the same cluster, as several addresses behind one name would be: each
    /// visit knocks at one of them all, at random, so a door that died is not the only way in.
    pub others: Vec<Target>,
    /// The space to join again.
    pub space: String,
    /// Frames per WebSocket message to ask the new node for.
    pub batch: usize,
}

/// What one visit to the door says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visit {
    /// In: listen at `node` with `token`.
    Admitted {
        /// The node named (the door itself when the answer names none).
        node: Target,
        /// The listening ticket.
        token: String,
    },
    /// In line: come back with `ticket` after `after` (not a failure).
    Wait {
        /// The waiting-room ticket that keeps the place.
        ticket: String,
        /// When to come back.
        after: Duration,
    },
    /// Not now (rate-limited, draining, door busy, unreadable answer): back off and try again,
    /// no sooner than `after` if the door said.
    Retry {
        /// The door's `Retry-After`.
        after: Option<Duration>,
    },
    /// Refused for good (the space ended, no right to listen, ...): the status.
    Refused(u16),
}

impl Door {
    /// The door to knock at for one visit (`pick` is any random number).
    pub fn pick(&self, pick: usize) -> Target {
        match pick % (self.others.len() + 1) {
            0 => self.target,
            n => self.others[n - 1],
        }
    }
}

/// The pause before knocking at the next door when one could not be reached.
const NEXT_DOOR: Duration = Duration::from_millis(100);

/// Reads a join answer (sans-IO): its status, JSON body and `Retry-After` in seconds; `door`
/// is the door that answered.
pub fn read_answer(
    door: Target,
    status: u16,
    body: &serde_json::Value,
    retry_after: Option<u64>,
) -> Visit {
    let retry_after = retry_after.map(Duration::from_secs);
    match status {
        200 => {
            let Some(token) = body["token"].as_str() else { return Visit::Retry { after: None } };
            let node = match body["node"].as_str().map(str::parse::<Target>) {
                None => door,
                Some(Ok(node)) => node,
                // A node this tool may not reach (off loopback): stay at the door's.
                Some(Err(_)) => door,
            };
            Visit::Admitted { node, token: token.to_owned() }
        }
        202 => match body["waiting"]["ticket"].as_str() {
            Some(ticket) => Visit::Wait {
                ticket: ticket.to_owned(),
                after: Duration::from_millis(
                    body["waiting"]["retry_after_ms"].as_u64().unwrap_or(1_000),
                ),
            },
            None => Visit::Retry { after: retry_after },
        },
        429 | 500..=599 => Visit::Retry { after: retry_after },
        other => Visit::Refused(other),
    }
}

/// One visit: `POST join` on a fresh connection from `source`, naming the node it could not
/// reach or lost (`avoid`), so the door names another.
pub async fn visit(
    door: &Door,
    source: IpAddr,
    ticket: Option<&str>,
    pick: usize,
    bearer: Option<&str>,
    avoid: Option<Target>,
) -> io::Result<Visit> {
    let at = door.pick(pick);
    let mut stream = http::connect(&at, source).await?;
    let mut buf = ReadBuf::new(4_096);
    let path = join_path(&door.space, ticket, avoid);
    http::post(&mut stream, &at, &path, bearer, "").await?;
    let head = http::read_head(&mut stream, &mut buf).await?;
    let (status, retry_after) = (head.status, head.retry_after);
    let body = http::read_body(&mut stream, &mut buf, head).await?;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    Ok(read_answer(at, status, &json, retry_after))
}

/// `join`'s path and query: the waiting ticket to come back with, the node to avoid.
pub fn join_path(space: &str, ticket: Option<&str>, avoid: Option<Target>) -> String {
    let mut query: Vec<String> = Vec::new();
    if let Some(t) = ticket {
        query.push(format!("ticket={t}"));
    }
    if let Some(node) = avoid {
        query.push(format!("avoid={node}"));
    }
    let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    format!("/api/v1/spaces/{space}/join{q}")
}

/// Goes back through `door` until admitted, waiting by `backoff` before each visit (the first
/// no sooner than `first_wait`, e.g. a `bye`'s delay); `None` if refused for good or not in
/// before `deadline`. With the listening ticket it last had (`held`), the door does not queue
/// it as a newcomer; a ticket no longer good is dropped and the listener joins anew. A node it
/// lost or could not reach (`avoid`) is named to the door, which sends it elsewhere (a node
/// killed a moment ago is still in the door's list for a round or two).
pub async fn rejoin(
    door: &Door,
    source: IpAddr,
    first_wait: Option<Duration>,
    backoff: &mut Backoff,
    deadline: Instant,
    held: Option<&str>,
    avoid: Option<Target>,
) -> Option<(Target, String)> {
    let mut bearer = held;
    let mut floor = first_wait;
    let mut ticket: Option<String> = None;
    // Doors are tried in turn from a random one; one that cannot be reached sends the next
    // visit to the next door at once, and only a whole round of them unreachable widens the
    // backoff (as a client tries the next address of a name).
    let mut pick = rand::random::<u32>() as usize;
    let mut unreachable = 0;
    loop {
        let pause = backoff.next_delay(rand::random(), floor.take());
        if Instant::now() + pause >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        let visited = visit(door, source, ticket.as_deref(), pick, bearer, avoid);
        match timeout_at(deadline, visited).await {
            Err(_) => return None,
            Ok(Err(_)) => {
                pick = pick.wrapping_add(1);
                unreachable += 1;
                if unreachable <= door.others.len() {
                    backoff.reset();
                    floor = Some(NEXT_DOOR);
                } else {
                    unreachable = 0;
                }
            }
            Ok(Ok(Visit::Admitted { node, token })) => {
                // Admitted is progress: if the node named fails too (it died a moment ago and
                // the door does not know yet), the next visit comes soon, not after a widened
                // backoff.
                backoff.reset();
                return Some((node, token));
            }
            Ok(Ok(Visit::Wait { ticket: t, after })) => {
                // Waiting in line is progress, not failure: the line's own pace sets the wait.
                ticket = Some(t);
                backoff.reset();
                floor = Some(after);
            }
            Ok(Ok(Visit::Retry { after })) => floor = after,
            // The old ticket expired (or is not one): join anew, as a newcomer.
            Ok(Ok(Visit::Refused(401))) if bearer.is_some() => bearer = None,
            Ok(Ok(Visit::Refused(_))) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn door() -> Door {
        Door {
            target: "http://127.0.0.1:8080".parse().expect("target"),
            others: Vec::new(),
            space: "s".into(),
            batch: 5,
        }
    }

    #[test]
    fn the_join_path_carries_the_ticket_and_the_node_to_avoid() {
        let edge: Target = "http://127.0.0.1:9001".parse().expect("target");
        assert_eq!(join_path("s", None, None), "/api/v1/spaces/s/join");
        assert_eq!(join_path("s", Some("w"), None), "/api/v1/spaces/s/join?ticket=w");
        assert_eq!(
            join_path("s", Some("w"), Some(edge)),
            "/api/v1/spaces/s/join?ticket=w&avoid=http://127.0.0.1:9001"
        );
        assert_eq!(
            join_path("s", None, Some(edge)),
            "/api/v1/spaces/s/join?avoid=http://127.0.0.1:9001"
        );
    }

    #[test]
    fn visits_knock_at_every_door() {
        let mut d = door();
        d.others = vec!["http://127.0.0.1:8081".parse().expect("t")];
        let picked: std::collections::BTreeSet<String> =
            (0..4).map(|n| d.pick(n).to_string()).collect();
        assert_eq!(picked.len(), 2);
        assert_eq!(door().pick(7), door().target, "one door: always it");
    }

    #[test]
    fn join_answers_read_as_the_client_rules_say() {
        let d = door().target;
        let edge: Target = "http://127.0.0.1:9000".parse().expect("target");
        assert_eq!(
            read_answer(d, 200, &json!({"token": "t", "node": "http://127.0.0.1:9000"}), None),
            Visit::Admitted { node: edge, token: "t".into() }
        );
        assert_eq!(
            read_answer(d, 200, &json!({"token": "t"}), None),
            Visit::Admitted { node: d, token: "t".into() },
            "no node named: listen at the door"
        );
        assert_eq!(
            read_answer(d, 202, &json!({"waiting": {"ticket": "w", "retry_after_ms": 2500}}), None),
            Visit::Wait { ticket: "w".into(), after: Duration::from_millis(2_500) }
        );
        assert_eq!(
            read_answer(d, 503, &json!({"error": {"code": "draining"}}), Some(1)),
            Visit::Retry { after: Some(Duration::from_secs(1)) }
        );
        assert_eq!(read_answer(d, 429, &json!(null), None), Visit::Retry { after: None });
        assert_eq!(
            read_answer(d, 410, &json!({"error": {"code": "ended"}}), None),
            Visit::Refused(410)
        );
    }
}
