//! The abuse suite: a million distinct anonymous identities, from all over the address space,
//! flood the public API of one node (in-process, through the real router: every handler, limit
//! and store write runs; only the sockets are skipped). Memory and the database stay under
//! stated bounds.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use tower::ServiceExt;
use townhall_core::{Claims, Identity, Role, SpaceScope};
use townhall_server::Config;
use townhall_server::net::ClientAddr;

/// Distinct anonymous identities in the flood.
const IDENTITIES: u32 = 1_000_000;
/// Rows of reports (and of the moderation log) the node keeps in this test.
const RETENTION: u64 = 10_000;
/// Resident memory the flood may add, bytes: fixed-size sketches and bounded tables only.
const RSS_BUDGET: u64 = 192 * 1024 * 1024;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// An anonymous listener's ticket, as `join` mints them (the join route itself is exercised
/// for a sample below; minting the rest directly keeps the run within seconds).
fn anonymous_ticket(n: u32) -> String {
    let now = townhall_server::clock::now_unix();
    let who = Identity::new(format!("anon-{n:016x}")).expect("id");
    let scope = SpaceScope::try_from("flood".to_owned()).expect("scope");
    let claims = Claims {
        anon: true,
        ticket: true,
        ..Claims::new(TEST_API_KEY, who, Role::Listener, scope, now, 3_600)
    };
    keys().mint_claims(claims).expect("mint")
}

/// A spread of source addresses: every identity from its own address, 256 per /24.
fn address(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32.wrapping_add(n)))
}

async fn send(router: &axum::Router, req: Request<Body>, from: IpAddr) -> StatusCode {
    let mut req = req;
    req.extensions_mut().insert(ClientAddr(from));
    router.clone().oneshot(req).await.map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status())
}

fn post(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

/// One anonymous identity raises a hand (broadcast to every listener); every eighth also files
/// a report. Returns the statuses.
async fn flood_one(router: &axum::Router, n: u32) -> Vec<u16> {
    let ticket = anonymous_ticket(n);
    let from = address(n);
    let body = r#"{"action":"request_to_speak"}"#;
    let hand = post("/api/v1/spaces/flood/actions", Some(&ticket), body);
    let mut answers = vec![send(router, hand, from).await.as_u16()];
    if n.is_multiple_of(8) {
        let body = r#"{"category":"spam","details":"flood"}"#;
        let report = post("/api/v1/spaces/flood/reports", Some(&ticket), body);
        answers.push(send(router, report, from).await.as_u16());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_anonymous_identities_leave_memory_and_disk_bounded() {
    let dir = std::env::temp_dir().join(format!("townhall-abuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server_with(Config {
        database: true,
        data_dir: dir.clone(),
        retention_rows: RETENTION,
        ..Config::default()
    })
    .await;
    live_space(server.addr(), "flood").await;
    let app: Arc<_> = server.state().clone();
    let router = townhall_server::router(app.clone());
    let before = rss_bytes();

    // A sample of real joins, each from its own address: the join route mints the tickets.
    let mut joined = 0;
    for n in 0..1_000 {
        let status = send(&router, post("/api/v1/spaces/flood/join", None, ""), address(n)).await;
        joined += usize::from(status == StatusCode::OK);
    }
    assert_eq!(joined, 1_000, "anonymous joins from distinct addresses are admitted");

    // Both cores: a few workers, each with requests in flight, as a flood would have them.
    use futures_util::StreamExt;
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new()));
    let workers: u32 = 4;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (router, statuses) = (router.clone(), statuses.clone());
            tokio::spawn(async move {
                let mine = (0..IDENTITIES).filter(move |n| n % workers == w);
                futures_util::stream::iter(mine)
                    .for_each_concurrent(8, |n| {
                        let (router, statuses) = (&router, &statuses);
                        async move {
                            let answers = flood_one(router, n).await;
                            let mut s = statuses.lock().unwrap_or_else(|p| p.into_inner());
                            answers.into_iter().for_each(|a| *s.entry(a).or_default() += 1);
                        }
                    })
                    .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("statuses over the flood: {statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "some hands went up: {statuses:?}");
    assert!(
        statuses.keys().all(|s| [200, 201, 409, 429, 503].contains(s)),
        "only clear answers: {statuses:?}"
    );

    // The room: bounded membership and hands, an O(sample) view.
    let live = app.live(&townhall_core::SpaceId::new("flood").expect("id")).expect("live");
    let view = live.room_view();
    let room = townhall_core::room::RoomConfig::default();
    assert!(view.present <= room.max_members, "present {}", view.present);
    assert!(view.hands_total <= room.max_hands, "hands {}", view.hands_total);
    assert!(view.hands.len() <= townhall_core::room::Room::HAND_SAMPLE);
    // The database: reports trimmed to the retention, the file under its budget.
    let reports = app.store.report_count().expect("count");
    assert!(reports <= RETENTION, "{reports} reports kept");
    let db = std::fs::metadata(dir.join("townhall.sqlite3")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.join("townhall.sqlite3-wal")).map_or(0, |m| m.len());
    // A report row is at most ~2.2 KiB (2,000 characters of details): the bound, with slack for
    // the free pages SQLite keeps after deleting.
    let db_budget = RETENTION * 2_300 * 4 + 16 * 1024 * 1024;
    assert!(db <= db_budget, "database {db} bytes > {db_budget}");
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("RSS grew {} MiB; {reports} reports kept; database {} MiB", grown >> 20, db >> 20);
    assert!(grown <= RSS_BUDGET, "RSS grew by {grown} bytes");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
