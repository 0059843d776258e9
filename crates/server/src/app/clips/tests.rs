//! Unit tests of clips: ids, titles, limits under a million callers, the file cutter's
//! bisection, the live ring's cut, the budget.

use std::net::IpAddr;

use bytes::Bytes;
use townhall_core::UnixTime;
use townhall_media::OggOpusMuxer;
use townhall_media::clip::{ClipSpec, cut as cut_whole};
use townhall_media::recording::{RecordingTags, RecordingWriter, WriterConfig};

use super::cut::{file_clip, live_clip};
use super::*;
use crate::app::store::Store;

/// A 20 ms packet the cutter can time (a CELT table of contents), numbered.
fn packet(n: u32) -> Bytes {
    Bytes::from(vec![0xF8, (n % 251) as u8, (n / 251 % 251) as u8])
}

#[test]
fn ids_are_never_paths_and_titles_are_checked() {
    let id = new_id();
    assert!(valid_id(&id), "{id}");
    for bad in ["", "../../etc/passwd", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdefa"]
    {
        assert!(!valid_id(bad), "{bad}");
    }
    assert_eq!(checked_title(None).expect("none"), None);
    assert_eq!(checked_title(Some("  Best bit ")).expect("ok"), Some("Best bit".into()));
    for bad in ["", "   ", "a\nb", &"x".repeat(MAX_TITLE_CHARS + 1)] {
        assert!(checked_title(Some(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn a_million_callers_leave_the_limits_where_they_were() {
    let clips = Clips::default();
    let before = clips.memory_bytes();
    let mut allowed = 0;
    for n in 0..1_000_000u32 {
        let who = Identity::new(format!("anon-{n:08x}")).expect("id");
        let ip = IpAddr::from(n.to_be_bytes());
        let anonymous = n % 2 == 0;
        if clips.check((!anonymous).then_some(&who), Some(ip)).is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(clips.memory_bytes(), before, "fixed-memory sketches, whoever asks");
    assert!(before <= 1 << 20, "{before} bytes");
    assert!(allowed > 0);
    // One address, fresh identities or none: its burst, then refused with a time to retry.
    let clips = Clips::default();
    let ip: IpAddr = "198.51.100.7".parse().expect("ip");
    let ok = (0..50)
        .filter(|n| {
            let who = Identity::new(format!("x{n}")).expect("id");
            clips.check((n % 2 == 0).then_some(&who), Some(ip)).is_ok()
        })
        .count();
    assert_eq!(ok, 10);
    let refused = clips.check(None, Some(ip)).expect_err("limited");
    assert_eq!(refused.code, "rate_limited");
    assert!(refused.retry_after.is_some());
}

/// A finished recording of `frames` frames (pages of 25, as the recorder writes), on disk.
fn recording_file(dir: &Path, frames: u32) -> PathBuf {
    let tags = RecordingTags {
        title: "Long".into(),
        space: "s".into(),
        recording: "s-1-00".into(),
        started_at: 1,
    };
    let config = WriterConfig { sync_interval_ms: 1_000, page_frames: 25 };
    let (mut w, mut file) = RecordingWriter::new(3, 312, &tags, config, 0).expect("writer");
    for seq in 0..frames {
        file.extend(w.push(seq, packet(seq), u64::from(seq) * 20).expect("push").bytes);
    }
    file.extend(w.finish().expect("finish"));
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("long.opus");
    std::fs::write(&path, file).expect("write");
    path
}

fn spec(from_ms: u64, to_ms: u64) -> ClipSpec {
    ClipSpec { from_ms, to_ms, serial: 9, comments: vec!["TITLE=t".into()], max_bytes: 1 << 22 }
}

#[test]
fn a_clip_near_the_end_of_a_long_file_is_the_same_as_one_cut_from_the_whole() {
    let dir = std::env::temp_dir().join(format!("townhall-clipfile-{}", std::process::id()));
    // An hour of audio: 180,000 frames.
    let path = recording_file(&dir, 180_000);
    let whole = std::fs::read(&path).expect("read");
    for (from, to) in [(0, 30_000), (1_000, 2_000), (1_800_000, 1_860_000), (3_590_000, 3_600_000)]
    {
        let want = cut_whole(&whole, spec(from, to)).expect("cut from memory");
        let got = file_clip(&path, spec(from, to)).expect("cut from the file");
        assert_eq!(got, want, "{from}..{to}");
        let end = (to * 48 + 312).min(180_000 * 960);
        assert_eq!(got.duration_ms(), (end - (from * 48 + 312)) / 48);
    }
    assert!(matches!(
        file_clip(&path, spec(4_000_000, 4_010_000)),
        Err(super::cut::FileCutError::Cut(townhall_media::clip::CutError::OutOfRange))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_live_ring_cuts_its_last_seconds() {
    let mut mux = OggOpusMuxer::new(4, 312, 10, "live").expect("muxer");
    let mut pages = Vec::new();
    // Ten minutes on air; the ring holds about the last minute (as the feed keeps it).
    for seq in 0..30_000u32 {
        if let Some(page) = mux.push(&packet(seq), false).expect("push") {
            pages.push(page);
        }
    }
    let ring = &pages[pages.len() - 301..];
    let clip = live_clip(&mux.headers(), ring, 45, vec!["TITLE=live".into()]).expect("clip");
    assert_eq!(clip.duration_ms(), 45_000);
    assert_eq!(clip.end_ms, (30_000 * 960 - 312) / 48);
    let read = townhall_media::OggOpusReader::parse(&clip.bytes).expect("valid");
    assert_eq!(read.packets.last().map(|p| p.to_vec()), Some(packet(29_999).to_vec()));
    // A stream younger than the clip asked for: all of it, from its start.
    let young = live_clip(&mux.headers(), &pages[..50], 60, Vec::new()).expect("young");
    assert_eq!((young.start_ms, young.duration_ms()), (0, (500 * 960 - 312) / 48));
    assert_eq!(young.pre_skip, 312);
}

#[test]
fn the_budget_keeps_the_newest_clips_and_the_sweep_clears_leftovers() {
    let data = std::env::temp_dir().join(format!("townhall-clipkeep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let store = Store::in_memory().expect("store");
    let clips_dir = dir(&data);
    std::fs::create_dir_all(&clips_dir).expect("dir");
    let record = |n: u64| ClipRecord {
        id: format!("{n:016x}"),
        space: SpaceId::new("s").expect("id"),
        title: "t".into(),
        recording: None,
        from_ms: 0,
        to_ms: 30_000,
        duration_ms: 30_000,
        bytes: 100,
        created_at: UnixTime(n),
        created_by: None,
    };
    for n in 1..=5 {
        store.save_clip(&record(n)).expect("save");
        std::fs::write(clips_dir.join(file_name(&record(n).id)), [0u8; 100]).expect("file");
    }
    std::fs::write(clips_dir.join("00000000000000aa.opus.partial"), b"torn").expect("partial");
    std::fs::write(clips_dir.join(file_name("00000000000000bb")), b"orphan").expect("orphan");
    // At most 3 clips, 250 bytes: the three oldest go, and both leftovers.
    assert_eq!(sweep(&data, &store, 3, 250), 2);
    let left: Vec<bool> = (1..=5).map(|n| store.has_clip(&record(n).id).expect("has")).collect();
    assert_eq!(left, vec![false, false, false, true, true]);
    assert!(!clips_dir.join(file_name(&record(1).id)).exists());
    assert!(clips_dir.join(file_name(&record(5).id)).exists());
    assert_eq!(store.clip_totals().expect("totals"), (2, 200));
    let _ = std::fs::remove_dir_all(&data);
}
