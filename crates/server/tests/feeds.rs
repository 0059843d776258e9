//! Podcast feeds on a real server: spaces recorded for real, the feeds read by an independent
//! parser (Python's `feedparser`, Debian's `python3-feedparser`, which `.ci/run` installs), every
//! enclosure fetched; private spaces never listed; the host feeds, validators and refusals.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use townhall_core::Role;
use townhall_server::Config;

/// A title that XML must escape, with non-ASCII text.
const HARD_TITLE: &str = "Q&A <live> \"quoted\" 'single' — Café ☕ 東京";

/// Debian's Python, where `python3-feedparser` installs (a `python3` earlier on `PATH`, such as
/// pyenv's, does not see Debian's packages).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" }
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn create(addr: SocketAddr, host: &str, id: &str, title: &str, public: bool) {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(token(host, Role::Host, "*"))
        .json(&json!({ "id": id, "title": title, "live": true, "public": public }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "create {id}: {}", res.text().await.unwrap_or_default());
}

async fn set_recording(addr: SocketAddr, space: &str, on: bool) -> Value {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces/{space}/recording"))
        .bearer_auth(host())
        .json(&json!({ "recording": on }))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200, "recording {space} {on}");
    res.json().await.expect("json")
}

/// Parses `xml` with feedparser; returns what it understood.
fn feedparser(dir: &Path, xml: &str) -> Value {
    let file = dir.join(format!("feed-{}.xml", rand_suffix()));
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(&file, xml).expect("write the feed");
    let script = r#"
import json, sys, feedparser
d = feedparser.parse(sys.argv[1])
f = d.feed
print(json.dumps({
    "bozo": int(d.bozo),
    "error": str(d.get("bozo_exception", "")),
    "version": d.version,
    "feed": {
        "title": f.get("title"), "link": f.get("link"), "language": f.get("language"),
        "author": f.get("author"), "explicit": f.get("itunes_explicit"),
        "categories": [t.get("term") for t in f.get("tags", [])],
        "owner": f.get("publisher_detail", {}).get("name"),
    },
    "entries": [{
        "title": e.get("title"), "id": e.get("id"), "link": e.get("link"),
        "published": e.get("published"), "parsed": e.get("published_parsed") is not None,
        "duration": e.get("itunes_duration"),
        "enclosures": [{"href": x.get("href"), "length": x.get("length"), "type": x.get("type")}
                       for x in e.get("enclosures", [])],
    } for e in d.entries],
}))
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("python3 runs (install Debian's python3-feedparser)");
    assert!(
        out.status.success(),
        "feedparser failed (apt-get install python3-feedparser): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("feedparser's json")
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn fetch(url: &str) -> reqwest::Response {
    http().get(url).send().await.expect("get")
}

/// Sends a raw request with its own `Host` header; returns the status line and body.
async fn raw_get(addr: SocketAddr, path: &str, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podcast_feeds_list_every_public_replay_and_each_enclosure_plays() {
    let dir = data_dir("feeds");
    let server = server_with(Config {
        data_dir: dir.clone(),
        feed_owner_email: Some("ops@example.com".into()),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    create(addr, "alice", "town", HARD_TITLE, true).await;
    create(addr, "alice", "secret", "Not for feeds", false).await;
    create(addr, "bob", "bobs", "Bob's show", true).await;
    for space in ["town", "secret", "bobs"] {
        set_recording(addr, space, true).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut recorded = std::collections::HashMap::new();
    for space in ["town", "secret", "bobs"] {
        let done = set_recording(addr, space, false).await;
        assert_eq!(done["state"], "finished", "{done}");
        recorded.insert(space, done);
    }

    // The node's feed: both public replays, newest first, never the private one.
    let res = fetch(&format!("http://{addr}/feeds/recordings.rss")).await;
    assert_eq!(res.status(), 200);
    let header = |res: &reqwest::Response, name: &str| {
        res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    };
    assert_eq!(header(&res, "content-type"), "application/rss+xml; charset=utf-8");
    assert_eq!(header(&res, "cache-control"), "public, max-age=60");
    let etag = header(&res, "etag");
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    let xml = res.text().await.expect("body");
    let secret_id = recorded["secret"]["id"].as_str().expect("id");
    assert!(!xml.contains("Not for feeds") && !xml.contains(secret_id), "a private replay: {xml}");
    let feed = feedparser(&dir, &xml);
    assert_eq!(feed["bozo"], 0, "feedparser: {}", feed["error"]);
    assert_eq!(feed["version"], "rss20");
    assert_eq!(feed["feed"]["title"], "Townhall replays");
    assert_eq!(feed["feed"]["link"], format!("http://{addr}/"));
    assert_eq!(feed["feed"]["language"], "en");
    assert_eq!(feed["feed"]["author"], "Townhall");
    assert_eq!(feed["feed"]["owner"], "Townhall");
    // Apple's current values are true/false; feedparser 6 reads only yes/clean, so "not explicit".
    assert_ne!(feed["feed"]["explicit"], true);
    assert!(xml.contains("<itunes:explicit>false</itunes:explicit>"), "{xml}");
    assert_eq!(feed["feed"]["categories"], json!(["Society & Culture"]));
    assert!(xml.contains("<itunes:email>ops@example.com</itunes:email>"), "{xml}");
    let entries = feed["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{feed}");
    let mut titles: Vec<&str> = entries.iter().filter_map(|e| e["title"].as_str()).collect();
    titles.sort_unstable();
    assert_eq!(titles, ["Bob's show", HARD_TITLE]);
    for entry in entries {
        let space = if entry["title"] == HARD_TITLE { "town" } else { "bobs" };
        let done = &recorded[space];
        let id = done["id"].as_str().expect("id");
        assert_eq!(entry["id"], id, "the guid is the recording's id");
        assert_eq!(entry["parsed"], true, "pubDate {}", entry["published"]);
        assert!(entry["duration"].as_str().is_some_and(|d| d.starts_with("00:00:0")), "{entry}");
        let enclosure = &entry["enclosures"][0];
        let href = format!("http://{addr}/recordings/{id}.opus");
        assert_eq!(enclosure["href"], href.as_str());
        assert_eq!(enclosure["type"], "audio/ogg");
        let length = done["bytes"].as_u64().expect("bytes");
        assert_eq!(enclosure["length"], length.to_string().as_str());
        assert!(length > 0);
        // The enclosure plays: the file, whole, with the length the feed announced.
        let res = fetch(&href).await;
        assert_eq!(
            (res.status().as_u16(), header(&res, "content-type")),
            (200, "audio/ogg".into())
        );
        let body = res.bytes().await.expect("file");
        assert_eq!(body.len() as u64, length);
        assert!(body.starts_with(b"OggS"));
    }
    assert!(xml.contains("isPermaLink=\"false\""), "{xml}");

    // The same bytes again are not sent again.
    let res = http()
        .get(format!("http://{addr}/feeds/recordings.rss"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional");
    assert_eq!(res.status(), 304);
    assert_eq!(header(&res, "etag"), etag);

    // Each host's feed holds the replays of the spaces they hosted, public ones only.
    let alice = fetch(&format!("http://{addr}/feeds/hosts/alice.rss")).await;
    assert_eq!(alice.status(), 200);
    let alice = feedparser(&dir, &alice.text().await.expect("body"));
    assert_eq!(alice["bozo"], 0, "{}", alice["error"]);
    assert_eq!(alice["feed"]["title"], "alice on Townhall");
    assert_eq!(alice["feed"]["author"], "alice");
    let titles: Vec<&str> = alice["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["title"].as_str())
        .collect();
    assert_eq!(titles, [HARD_TITLE]);
    let bob = feedparser(
        &dir,
        &fetch(&format!("http://{addr}/feeds/hosts/bob.rss")).await.text().await.expect("body"),
    );
    assert_eq!(bob["entries"][0]["title"], "Bob's show");
    assert_eq!(bob["entries"].as_array().map(Vec::len), Some(1));

    // Nobody's feed is empty, not an error (it says nothing of who exists); identities with
    // spaces and non-ASCII letters are paths too.
    for who in ["nobody", "Zo%C3%AB%20Q"] {
        let res = fetch(&format!("http://{addr}/feeds/hosts/{who}.rss")).await;
        assert_eq!(res.status(), 200, "{who}");
        let empty = feedparser(&dir, &res.text().await.expect("body"));
        assert_eq!(
            (empty["bozo"].as_i64(), empty["entries"].as_array().map(Vec::len)),
            (Some(0), Some(0))
        );
    }

    // Bad identities, and a Host that is not a plain host.
    let long = "a".repeat(129);
    for bad in ["alice", "alice.xml", ".rss", "a%0Ab.rss", &format!("{long}.rss")] {
        let res = fetch(&format!("http://{addr}/feeds/hosts/{bad}")).await;
        assert_error(res, 400, "invalid_identity").await;
    }
    let answer = raw_get(addr, "/feeds/recordings.rss", "evil.example\"><x").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_host") && !answer.contains("<x"), "{answer}");
    let answer = raw_get(addr, "/feeds/recordings.rss", "Feeds.Example:8443").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("<link>http://feeds.example:8443/</link>"), "{answer}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_configured_public_url_makes_the_links_whatever_the_host_header() {
    let dir = data_dir("feeds-public-url");
    let server = server_with(Config {
        data_dir: dir.clone(),
        public_url: Some("https://replays.example.com/".into()),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    let answer = raw_get(addr, "/feeds/recordings.rss", "evil.example\"><x").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("<link>https://replays.example.com/</link>"), "{answer}");
    assert!(!answer.contains("evil"), "{answer}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
