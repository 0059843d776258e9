//! A slow disk delays the requests that need the database, never the async workers that every
//! listener and joiner shares: while the database is stuck, listeners keep hearing audio and
//! the node keeps answering.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_database_stalls_only_the_requests_that_need_it() {
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let mut listener = ws(addr, "/ws/demo").await;
    assert_eq!(next_json(&mut listener).await["type"], "hello");

    // The database is stuck (a disk that does not answer) for a while.
    let store = server.state().store.clone();
    let released = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let stuck = {
        let released = released.clone();
        std::thread::spawn(move || {
            store.with_connection(|_| {
                let _ = held_tx.send(());
                std::thread::sleep(Duration::from_secs(6));
                released.store(true, Ordering::SeqCst);
            });
        })
    };
    held_rx.await.expect("the database is held");

    // More requests that need the database than the node has async workers.
    let moderation: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                http()
                    .get(format!("http://{addr}/api/v1/admin/moderation"))
                    .bearer_auth(host())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The node still answers, and the listener still hears the program, before the disk does.
    let health = http().get(format!("http://{addr}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    assert!(!released.load(Ordering::SeqCst), "answered while the database was stuck");
    let mut frames = 0;
    while frames < 25 {
        match tokio::time::timeout(Duration::from_secs(10), listener.next()).await {
            Ok(Some(Ok(Message::Binary(_)))) => frames += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("the listener lost its stream: {other:?}"),
        }
    }
    assert!(!released.load(Ordering::SeqCst), "half a second of audio heard while stuck");

    // Once the disk answers, the stalled requests complete.
    stuck.join().expect("thread");
    for task in moderation {
        assert_eq!(task.await.expect("task").expect("answer"), 200);
    }
    server.shutdown().await;
}
