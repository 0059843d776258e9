//! Unit tests of the store: round trips, migrations, bans, corrupt rows.

use super::*;
use townhall_core::NewSpace;
use townhall_core::Space;
use townhall_core::room::ModerationEntry;

fn id(s: &str) -> Identity {
    Identity::new(s).expect("identity")
}

fn space(name: &str) -> Space {
    let req = NewSpace { title: format!("Space {name}"), ..NewSpace::default() };
    let sid = SpaceId::new(name).expect("id");
    Space::create(sid, req, id("host"), UnixTime(100)).expect("space")
}

#[test]
fn spaces_survive_reopening_the_file_with_every_field() {
    let dir = std::env::temp_dir().join(format!("townhall-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = space("a");
    s.description = Some("about".into());
    s.scheduled_for = Some(UnixTime(500));
    {
        let store = Store::open(&dir).expect("open");
        store.save_space(&s).expect("save");
        s.start(UnixTime(400)).expect("start");
        store.save_space(&s).expect("save again");
    }
    let store = Store::open(&dir).expect("reopen");
    assert!(store.is_persistent());
    assert_eq!(store.spaces().expect("spaces"), vec![s.clone()]);
    store.delete_space(&s.id).expect("delete");
    assert_eq!(store.space_count().expect("count"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let mut conn = Connection::open_in_memory().expect("conn");
    migrate(&mut conn).expect("first");
    migrate(&mut conn).expect("second is a no-op");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew(99, _))));
}

#[test]
fn moderation_keeps_bans_and_unblock_lifts_only_the_block() {
    let store = Store::in_memory().expect("store");
    let sid = SpaceId::new("s").expect("id");
    let entry = |action, target: &str, at| ModerationEntry {
        at: UnixTime(at),
        actor: id("host"),
        action,
        target: Some(id(target)),
        reason: Some("why".into()),
    };
    store
        .record_moderation(
            &sid,
            &[
                entry(ModAction::Mute, "m", 1),
                entry(ModAction::Remove, "r", 2),
                entry(ModAction::Block, "b", 3),
                entry(ModAction::Block, "r", 4),
            ],
        )
        .expect("record");
    let bans = store.bans(&sid).expect("bans");
    assert_eq!(
        bans,
        vec![(id("r"), BanKind::Removed), (id("b"), BanKind::Blocked), (id("r"), BanKind::Blocked)]
    );
    store.record_moderation(&sid, &[entry(ModAction::Unblock, "r", 5)]).expect("unblock");
    let bans = store.bans(&sid).expect("bans");
    assert_eq!(bans, vec![(id("r"), BanKind::Removed), (id("b"), BanKind::Blocked)]);
    let log = store.moderation(Some(&sid), None, 10).expect("log");
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].entry.action, ModAction::Unblock, "newest first");
    let page = store.moderation(None, Some(log[1].seq), 2).expect("page");
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![log[2].seq, log[3].seq]);
}

#[test]
fn reports_and_recordings_round_trip() {
    let store = Store::in_memory().expect("store");
    let sid = SpaceId::new("s").expect("id");
    let r = store
        .add_report(&sid, UnixTime(7), &id("me"), Some(&id("them")), ReportCategory::Hate, None)
        .expect("report");
    assert_eq!(store.reports(Some(&sid), None, 10).expect("reports"), vec![r]);
    assert!(store.reports(Some(&SpaceId::new("t").expect("id")), None, 10).expect("r").is_empty());
    let mut rec = RecordingRecord {
        id: "s-7".into(),
        space: sid,
        title: "T".into(),
        file: "s-7.opus".into(),
        started_at: UnixTime(7),
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
        state: RecordingState::Recording,
        host: Some(id("h")),
        part: None,
    };
    store.save_recording(&rec).expect("save");
    rec.state = RecordingState::Finished;
    rec.ended_at = Some(UnixTime(9));
    rec.duration_ms = 2_000;
    store.save_recording(&rec).expect("update");
    assert_eq!(store.recordings().expect("list"), vec![rec.clone()]);
    assert_eq!(store.recording("s-7").expect("one"), Some(rec));
    assert_eq!(store.recording("nope").expect("none"), None);
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let store = Store::in_memory().expect("store");
    store
        .conn()
        .execute(
            "INSERT INTO spaces (id, title, host, state, public, created_at)
             VALUES ('ok', 't', 'h', 'sideways', 1, 0)",
            [],
        )
        .expect("insert");
    assert!(matches!(store.spaces(), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_version_1_database_gains_recording_hosts_from_its_spaces() {
    let conn = Connection::open_in_memory().expect("db");
    conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
    conn.pragma_update(None, "user_version", 1).expect("v1");
    conn.execute_batch(
        "INSERT INTO spaces (id, title, host, state, public, created_at)
             VALUES ('kept', 't', 'alice', 'ended', 1, 0);
         INSERT INTO recordings (id, space, title, file, started_at, duration_ms, bytes, state)
             VALUES ('kept-1', 'kept', 't', 'kept-1.opus', 5, 1000, 10, 'finished'),
                    ('gone-1', 'gone', 't', 'gone-1.opus', 6, 1000, 10, 'finished');",
    )
    .expect("v1 rows");
    let store = Store::ready(conn, false).expect("migrated");
    let host = |rid: &str| store.recording(rid).expect("row").expect("kept").host;
    assert_eq!(host("kept-1"), Some(id("alice")));
    assert_eq!(host("gone-1"), None, "a space no longer stored leaves the host unknown");
    let alices = store.public_recordings(Some(&id("alice")), 10).expect("feed");
    assert_eq!(alices.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["kept-1"]);
}

#[test]
fn public_recordings_leave_out_private_spaces_unfinished_ones_and_other_hosts() {
    let store = Store::in_memory().expect("store");
    let now = UnixTime(100);
    for (sid, public, host) in
        [("pub", true, "alice"), ("priv", false, "alice"), ("bob", true, "bob")]
    {
        let req = NewSpace { title: sid.into(), public, live: true, ..NewSpace::default() };
        let space =
            Space::create(SpaceId::new(sid).expect("id"), req, id(host), now).expect("space");
        store.save_space(&space).expect("save");
    }
    let rec = |rid: &str, sid: &str, host: &str, at: u64, state| RecordingRecord {
        id: rid.into(),
        space: SpaceId::new(sid).expect("id"),
        title: rid.into(),
        file: format!("{rid}.opus"),
        started_at: UnixTime(at),
        ended_at: None,
        duration_ms: 1_000,
        bytes: 10,
        state,
        host: Some(id(host)),
        part: None,
    };
    for r in [
        rec("pub-1", "pub", "alice", 1, RecordingState::Finished),
        rec("pub-2", "pub", "alice", 2, RecordingState::Recovered),
        rec("pub-3", "pub", "alice", 3, RecordingState::Recording),
        rec("priv-1", "priv", "alice", 4, RecordingState::Finished),
        rec("bob-1", "bob", "bob", 5, RecordingState::Finished),
    ] {
        store.save_recording(&r).expect("save");
    }
    let ids = |host: Option<&str>, limit| {
        let host = host.map(id);
        let rows = store.public_recordings(host.as_ref(), limit).expect("feed");
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(None, 10), ["bob-1", "pub-2", "pub-1"]);
    assert_eq!(ids(Some("alice"), 10), ["pub-2", "pub-1"]);
    assert_eq!(ids(Some("alice"), 1), ["pub-2"], "the private one does not take the only slot");
    assert!(ids(Some("nobody"), 10).is_empty());
}

#[test]
fn clips_and_turns_round_trip_and_go_with_their_rows() {
    let store = Store::in_memory().expect("store");
    let clip = |n: u64| ClipRecord {
        id: format!("{n:016x}"),
        space: SpaceId::new("s").expect("id"),
        title: "Night show".into(),
        recording: n.is_multiple_of(2).then(|| "s-1-00".to_owned()),
        from_ms: n * 1_000,
        to_ms: n * 1_000 + 30_000,
        duration_ms: 30_000,
        bytes: 100 + n,
        created_at: UnixTime(1_000 + n),
        created_by: n.is_multiple_of(3).then(|| id("ann")),
    };
    for n in [3, 1, 2] {
        store.save_clip(&clip(n)).expect("save");
    }
    assert_eq!(store.clip(&clip(2).id).expect("get"), Some(clip(2)));
    assert_eq!(store.clip("nope").expect("get"), None);
    assert_eq!(store.clip_totals().expect("totals"), (3, 306));
    let oldest: Vec<String> =
        store.oldest_clips(2).expect("oldest").into_iter().map(|c| c.id).collect();
    assert_eq!(oldest, vec![clip(1).id, clip(2).id]);
    store.delete_clip(&clip(1).id).expect("delete");
    assert!(!store.has_clip(&clip(1).id).expect("has"));
    assert_eq!(store.clip_totals().expect("totals"), (2, 205));

    let turns = vec![
        SpeakerTurn { speaker: id("ann"), start_ms: 0, end_ms: 1_200 },
        SpeakerTurn { speaker: id("bob"), start_ms: 900, end_ms: 4_000 },
    ];
    assert_eq!(store.turns("r").expect("none yet"), vec![]);
    store.save_turns("r", &turns).expect("save");
    store.save_turns("r", &turns).expect("replace");
    assert_eq!(store.turns("r").expect("turns"), turns);
    store.delete_recording("r").expect("delete");
    assert_eq!(store.turns("r").expect("gone"), vec![]);
    // Clips cut in the same second go in the order they were saved, whatever their ids.
    let same_second =
        |n: u64, id: &str| ClipRecord { id: id.to_owned(), created_at: UnixTime(5_000), ..clip(n) };
    for (n, id) in [(7, "cl_zzzz"), (8, "cl_aaaa"), (9, "cl_mmmm")] {
        store.save_clip(&same_second(n, id)).expect("save");
    }
    let later: Vec<String> =
        store.oldest_clips(10).expect("oldest").into_iter().map(|c| c.id).collect();
    assert_eq!(&later[later.len() - 3..], ["cl_zzzz", "cl_aaaa", "cl_mmmm"]);
}

#[test]
fn space_stats_round_trip_list_newest_first_and_go_with_their_space() {
    use townhall_core::stats::{ListenerKey, Protocol, SpaceStats, StatsConfig};
    let store = Store::in_memory().expect("store");
    let (a, b) = (space("a"), space("b"));
    let mut stats = SpaceStats::new(StatsConfig::default(), UnixTime(100));
    stats.joined(Protocol::Ogg, ListenerKey::derive(b"s", "ip:1"), UnixTime(110));
    store.save_space_stats(&a.id, UnixTime(120), &stats).expect("save a");
    store.save_space_stats(&b.id, UnixTime(130), &stats).expect("save b");
    assert_eq!(store.space_stats(&a.id).expect("read"), Some(stats.clone()));
    let recent = store.recent_space_stats(10).expect("list");
    let ids: Vec<&str> = recent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(store.recent_space_stats(1).expect("list").len(), 1);
    store.delete_space(&a.id).expect("delete");
    assert_eq!(store.space_stats(&a.id).expect("read"), None);
    store
        .with_connection(|c| {
            c.execute("UPDATE space_stats SET stats = 'nonsense' WHERE space = 'b'", [])
        })
        .expect("corrupt");
    assert!(matches!(store.space_stats(&b.id), Err(StoreError::Corrupt(_))));
}

#[test]
fn node_secrets_are_made_once_and_kept() {
    let store = Store::in_memory().expect("store");
    let salt = store.node_secret("listener_salt", 32).expect("made");
    assert_eq!(salt.len(), 32);
    assert_eq!(store.node_secret("listener_salt", 32).expect("kept"), salt);
    assert_ne!(store.node_secret("other", 32).expect("made"), salt);
}

#[test]
fn a_program_clock_is_kept_replaced_and_forgotten_with_its_space() {
    let store = Store::in_memory().expect("store");
    let s = space("clocked");
    store.save_space(&s).expect("save");
    assert_eq!(store.program_clock(&s.id).expect("read"), None, "none kept yet");
    let first = townhall_media::ProgramClock::new(0, 1_700_000_000_000);
    store.save_program_clock(&s.id, first).expect("keep");
    assert_eq!(store.program_clock(&s.id).expect("read"), Some(first));
    // An anchor that moved replaces the old one; numbers near the top of u32 round-trip.
    let moved = townhall_media::ProgramClock::new(u32::MAX - 3, 1_700_000_090_000);
    store.save_program_clock(&s.id, moved).expect("keep again");
    assert_eq!(store.program_clock(&s.id).expect("read"), Some(moved));
    store.delete_space(&s.id).expect("delete");
    assert_eq!(store.program_clock(&s.id).expect("read"), None, "forgotten with the space");
}
