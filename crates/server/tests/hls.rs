//! LL-HLS on a real server: the playlist follows the spec's rules, parts block until they exist,
//! caches are told what they may keep, and ffmpeg decodes what the playlist lists to the tone
//! that was spoken.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use townhall_media::analysis::tone_amplitude;

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> reqwest::Response {
    http().get(url(addr, path)).send().await.expect("get")
}

/// The URI of the preload hint, and its (msn, part).
fn preload_hint(playlist: &str) -> (String, u64, u32) {
    let uri = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .map(|rest| rest.trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no preload hint in {playlist}"));
    let (msn, part) = uri
        .trim_start_matches('p')
        .trim_end_matches(".mp4")
        .split_once('.')
        .expect("p{msn}.{part}");
    (uri.clone(), msn.parse().expect("msn"), part.parse().expect("part"))
}

#[tokio::test]
async fn hls_parts_block_cache_and_decode_to_the_spoken_tone() {
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "radio").await;
    let speaker = spawn_speaker(addr, "radio", "alice", 440.0, std::time::Duration::from_secs(9));
    tokio::time::sleep(Duration::from_secs(7)).await;

    let master = get(addr, "/hls/radio/master.m3u8").await;
    assert_eq!(master.status(), 200);
    assert!(master.text().await.expect("text").contains("index.m3u8"));

    let res = get(addr, "/hls/radio/index.m3u8").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(res.headers()["cache-control"], "public, max-age=1");
    let playlist = res.text().await.expect("text");
    assert!(playlist.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"), "{playlist}");
    assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""));

    // Blocking reload: ask for the hinted part; the answer waits for it, then lists it.
    let (hint, msn, part) = preload_hint(&playlist);
    let asked = Instant::now();
    let res = get(addr, &format!("/hls/radio/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=6");
    let blocked = res.text().await.expect("text");
    assert!(
        blocked.contains(&format!("URI=\"{hint}\"")),
        "the hinted part is listed now:\n{blocked}"
    );
    assert!(asked.elapsed() < Duration::from_secs(6), "bounded wait");
    // The next hinted part, requested directly, is held until it exists.
    let (next_hint, _, _) = preload_hint(&blocked);
    let res = get(addr, &format!("/hls/radio/{next_hint}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=86400, immutable");
    assert!(res.headers().contains_key("etag"));
    assert!(res.headers().contains_key("last-modified"));
    assert!(!res.bytes().await.expect("bytes").is_empty());

    // The spec's refusals.
    assert_eq!(
        get(addr, &format!("/hls/radio/index.m3u8?_HLS_msn={}", msn + 10)).await.status(),
        400
    );
    assert_eq!(get(addr, "/hls/radio/index.m3u8?_HLS_part=1").await.status(), 400);
    assert_eq!(get(addr, "/hls/radio/s999999.mp4").await.status(), 404);
    assert_eq!(get(addr, "/hls/radio/evil.txt").await.status(), 404);
    assert_eq!(get(addr, "/hls/nowhere/index.m3u8").await.status(), 404);

    // Everything the playlist lists, through ffmpeg.
    let playlist = get(addr, "/hls/radio/index.m3u8").await.text().await.expect("text");
    let mut file = get(addr, "/hls/radio/init.mp4").await.bytes().await.expect("init").to_vec();
    let segments: Vec<&str> =
        playlist.lines().filter(|l| l.starts_with('s') && l.ends_with(".mp4")).collect();
    assert!(segments.len() >= 2, "{playlist}");
    for s in &segments {
        let res = get(addr, &format!("/hls/radio/{s}")).await;
        assert_eq!(res.status(), 200, "{s}");
        file.extend_from_slice(&res.bytes().await.expect("segment"));
    }
    let dir = std::env::temp_dir().join(format!("townhall-hls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("hls.mp4");
    std::fs::write(&path, &file).expect("write");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg (Debian's ffmpeg package) runs");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let pcm: Vec<f32> =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert!(pcm.len() >= 2 * 96_000 - 2_000, "two segments of audio: {} samples", pcm.len());
    let amp = tone_amplitude(&pcm[pcm.len() - 48_000..], 440.0);
    assert!(amp > 0.25, "440 Hz over HLS: {amp}");
    let _ = std::fs::remove_dir_all(&dir);
    speaker.await.expect("speaker");

    // The end is marked.
    let res = http()
        .post(url(addr, "/api/v1/spaces/radio/end"))
        .bearer_auth(host())
        .send()
        .await
        .expect("end");
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let last = get(addr, "/hls/radio/index.m3u8").await.text().await.expect("text");
    assert!(last.contains("#EXT-X-ENDLIST"), "{last}");
    server.shutdown().await;
}

#[tokio::test]
async fn private_spaces_are_not_on_hls() {
    let server = server().await;
    let addr = server.addr();
    let res = http()
        .post(url(addr, "/api/v1/spaces"))
        .bearer_auth(host())
        .json(&serde_json::json!({ "id": "secret", "title": "Secret", "live": true, "public": false }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(get(addr, "/hls/secret/index.m3u8").await.status(), 403);
    server.shutdown().await;
}
