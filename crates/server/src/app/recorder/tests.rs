//! Unit tests of the recorder: tap, recovery, retention, ranges.

use super::*;
use std::sync::mpsc::sync_channel;

use bytes::Bytes;
use townhall_media::recording::{RecordingTags, RecordingWriter, WriterConfig, finalise};

use crate::app::store::{RecordingState, Store};
use crate::pipeline::record_tap::TapItem;

#[test]
fn the_sweep_keeps_the_newest_within_budget_and_retention() {
    let base = temp_dir("sweep");
    let store = Store::in_memory().expect("store");
    let rec_dir = dir(&base);
    std::fs::create_dir_all(&rec_dir).expect("dir");
    let space = SpaceId::new("s").expect("id");
    let row = |id: &str, day: u64, bytes: u64, state: RecordingState| RecordingRecord {
        id: id.into(),
        space: space.clone(),
        title: "t".into(),
        file: file_name(id),
        started_at: UnixTime(day * 86_400),
        ended_at: Some(UnixTime(day * 86_400 + 60)),
        duration_ms: 60_000,
        bytes,
        state,
        host: None,
        part: None,
    };
    for r in [
        row("old", 1, 100, RecordingState::Finished),
        row("mid", 5, 100, RecordingState::Recovered),
        row("new", 9, 100, RecordingState::Finished),
        row("live", 0, 10_000, RecordingState::Recording),
    ] {
        std::fs::write(rec_dir.join(&r.file), vec![0u8; r.bytes as usize]).expect("file");
        store.save_recording(&r).expect("row");
    }
    // A budget for two: the oldest finished one goes; one in progress is never touched.
    assert_eq!(sweep(&base, &store, 250, 0, UnixTime(10 * 86_400)), 1);
    let left: Vec<String> = store.recordings().expect("rows").into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec!["new", "mid", "live"]);
    assert!(!rec_dir.join(file_name("old")).exists());
    // Retention of 3 days: "mid" (day 5) is past it on day 10.
    assert_eq!(sweep(&base, &store, u64::MAX, 3, UnixTime(10 * 86_400)), 1);
    let left: Vec<String> = store.recordings().expect("rows").into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec!["new", "live"]);
    assert_eq!(sweep(&base, &store, u64::MAX, 3, UnixTime(10 * 86_400)), 0, "idempotent");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn ids_are_never_paths() {
    assert!(valid_id("demo-1767225600-0a1b2c3d"));
    for bad in ["", "../x", "a/b", "a.b", "A", "x\0", "a b", &"a".repeat(101)] {
        assert!(!valid_id(bad), "{bad:?}");
    }
    let id = new_id(&SpaceId::new("a-space").expect("id"), UnixTime(1));
    assert!(valid_id(&id) && id.starts_with("a-space-1-"));
}

#[test]
fn a_full_queue_drops_frames_and_a_gone_recorder_lets_go_of_the_tap() {
    let (tx, rx) = sync_channel(2);
    let mut tap = RecordTap::new(tx, "r", None);
    let frame = Bytes::from_static(b"opus");
    assert!((0..5).all(|seq| tap.offer(seq, &frame)), "never refuses while the recorder runs");
    assert_eq!(tap.dropped, 3);
    let seqs = |rx: &std::sync::mpsc::Receiver<TapItem>| -> Vec<Option<u32>> {
        rx.try_iter()
            .map(|i| match i {
                TapItem::Frame { seq, .. } => Some(seq),
                TapItem::Speaking(_) => None,
            })
            .collect()
    };
    assert_eq!(seqs(&rx), vec![Some(0), Some(1)]);
    // Who talks, with the queue full: told before the next frame that fits, in order.
    let ann = townhall_core::Identity::new("ann").expect("id");
    assert!(tap.offer(5, &frame) && tap.offer(6, &frame));
    tap.speaking(std::slice::from_ref(&ann));
    assert!(tap.offer(7, &frame), "full: dropped");
    assert_eq!(seqs(&rx), vec![Some(5), Some(6)]);
    assert!(tap.offer(8, &frame));
    assert_eq!(seqs(&rx), vec![None, Some(8)]);
    drop(rx);
    assert!(!tap.offer(9, &frame));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("townhall-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(DIR)).expect("dir");
    dir
}

/// A partial recording of `frames` frames as a crash leaves it: the open page lost, and
/// half a page torn off at the end.
fn crashed_file(id: &str, space: &str, frames: u32) -> Vec<u8> {
    let tags = RecordingTags {
        title: "Crashed".into(),
        space: space.into(),
        recording: id.into(),
        started_at: 1_000,
    };
    let (mut w, mut file) =
        RecordingWriter::new(1, 312, &tags, WriterConfig::default(), 0).expect("writer");
    for seq in 0..frames {
        file.extend(
            w.push(seq, Bytes::from_static(b"\xf8opus"), u64::from(seq) * 20).expect("push").bytes,
        );
    }
    file.extend_from_slice(b"OggS\0\0torn");
    file
}

#[test]
fn recovery_finalises_indexed_and_orphaned_partial_files() {
    let data = temp_dir("recover");
    let dir = data.join(DIR);
    let store = Store::in_memory().expect("store");
    let row = RecordingRecord {
        id: "s-1000-00000001".into(),
        space: SpaceId::new("s").expect("id"),
        title: "Indexed".into(),
        file: "s-1000-00000001.opus".into(),
        started_at: UnixTime(1_000),
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
        state: RecordingState::Recording,
        host: None,
        part: None,
    };
    store.save_recording(&row).expect("save");
    std::fs::write(dir.join("s-1000-00000001.opus.partial"), crashed_file(&row.id, "s", 260))
        .expect("write");
    // A file the index never knew (a node without a database, or a crash before indexing).
    let orphan = "t-1000-00000002";
    std::fs::write(dir.join(format!("{orphan}.opus.partial")), crashed_file(orphan, "t", 120))
        .expect("write");
    // A row whose file is gone, and a partial file with no headers.
    let missing = RecordingRecord {
        id: "s-1000-00000003".into(),
        file: "s-1000-00000003.opus".into(),
        ..row.clone()
    };
    store.save_recording(&missing).expect("save");
    std::fs::write(dir.join("u-1-00000004.opus.partial"), b"Ogg").expect("write");
    std::fs::write(dir.join("not-ours.txt"), b"x").expect("write");

    assert_eq!(recover(&data, &store, &Webhooks::disabled()), 3);
    let got = store.recording(&row.id).expect("index").expect("row");
    assert_eq!(got.state, RecordingState::Recovered);
    // 250 frames in 1 s pages reached the "disk"; the last 10 were in the open page.
    assert_eq!(got.duration_ms, townhall_media::recording::duration_ms(250 * 960, 312));
    let file = std::fs::read(dir.join(&row.file)).expect("finalised file");
    assert_eq!(got.bytes, file.len() as u64);
    assert!(finalise(&file).expect("valid").was_complete);
    let orphaned = store.recording(orphan).expect("index").expect("indexed from its tags");
    assert_eq!((orphaned.space.as_str(), orphaned.title.as_str()), ("t", "Crashed"));
    assert_eq!(orphaned.state, RecordingState::Recovered);
    assert_eq!(orphaned.started_at, UnixTime(1_000));
    let gone = store.recording(&missing.id).expect("index").expect("row");
    assert_eq!((gone.state, gone.bytes), (RecordingState::Recovered, 0));
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["not-ours.txt", "s-1000-00000001.opus", "t-1000-00000002.opus"]);
    // A second start finds nothing left to do.
    assert_eq!(recover(&data, &store, &Webhooks::disabled()), 0);
    let _ = std::fs::remove_dir_all(&data);
}
