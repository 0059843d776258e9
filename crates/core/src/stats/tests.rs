use proptest::prelude::*;

use super::sketch::mixed;
use super::*;

fn t(secs: u64) -> UnixTime {
    UnixTime(1_000_000 + secs)
}

fn key(i: u64) -> ListenerKey {
    ListenerKey::derive(b"test salt", &format!("id:{i}"))
}

fn stats() -> SpaceStats {
    SpaceStats::new(StatsConfig::default(), t(0))
}

#[test]
fn peak_average_and_listen_minutes_follow_the_step_function() {
    let mut s = stats();
    s.joined(Protocol::Ws, key(1), t(0));
    s.joined(Protocol::Ogg, key(2), t(30));
    s.joined(Protocol::Webrtc, key(3), t(30));
    s.left(t(30), t(90));
    let r = s.report(t(120));
    assert_eq!(r.listeners.peak, 3);
    assert_eq!(r.listeners.peak_at, Some(t(30)));
    assert_eq!(r.listeners.now, 2);
    // 1 listener 0-30, 3 listeners 30-90, 2 listeners 90-120: 30 + 180 + 60 = 270 s.
    assert_eq!(r.listen_minutes, 4.5);
    assert_eq!(r.listeners.average, 2.25);
    assert_eq!(r.joins, Joins { ws: 1, ogg: 1, webrtc: 1, hls: 0 });
    assert_eq!(r.listeners.unique, 3);
}

#[test]
fn a_listener_who_comes_back_is_one_unique_listener_and_two_joins() {
    let mut s = stats();
    s.joined(Protocol::Ws, key(7), t(0));
    s.left(t(0), t(5));
    s.joined(Protocol::Ogg, key(7), t(6));
    s.joined(Protocol::Hls, key(8), t(6));
    let r = s.report(t(10));
    assert_eq!(r.listeners.unique, 2);
    assert_eq!(r.joins.total(), 3);
    // HLS has no connection: it is not concurrent.
    assert_eq!(r.listeners.now, 1);
}

#[test]
fn reactions_and_hands_land_in_their_buckets() {
    let mut s = stats();
    let counts = BTreeMap::from([(Reaction::Clap, 3), (Reaction::Heart, 2)]);
    s.reacted(t(5), &counts, t(6));
    s.reacted(t(25), &BTreeMap::from([(Reaction::Clap, 1)]), t(26));
    s.hand_raised(t(27));
    let r = s.report(t(30));
    assert_eq!(r.reactions.total, 6);
    assert_eq!(r.reactions.by_kind.get(&Reaction::Clap), Some(&4));
    assert_eq!(r.requests_to_speak, 1);
    let reactions: Vec<u32> = r.series.iter().map(|p| p.reactions).collect();
    assert_eq!(reactions, vec![5, 0, 1, 0]);
    assert_eq!(r.series[2].requests_to_speak, 1);
}

#[test]
fn retention_is_the_share_of_sessions_that_lasted() {
    let mut s = stats();
    for i in 0..4 {
        s.joined(Protocol::Ws, key(i), t(0));
    }
    s.left(t(0), t(20)); // lasted 20 s
    s.left(t(0), t(70)); // lasted 70 s
    let r = s.report(t(400));
    let share = |after| r.retention.iter().find(|p| p.after_secs == after).map(|p| p.share);
    assert_eq!(share(0), Some(1.0));
    assert_eq!(share(10), Some(1.0));
    assert_eq!(share(30), Some(0.75));
    assert_eq!(share(60), Some(0.75));
    assert_eq!(share(120), Some(0.5));
    assert_eq!(share(300), Some(0.5));
    // Nothing yet past the space's age.
    assert_eq!(share(600), None);
}

#[test]
fn a_long_space_keeps_its_whole_run_in_a_bounded_series() {
    let mut s = stats();
    s.joined(Protocol::Ws, key(1), t(0));
    // A day: 8,640 ten-second buckets fold into at most 360.
    for h in 1..=24 {
        s.hand_raised(t(h * 3600));
    }
    let r = s.report(t(86_400));
    assert!(r.series.len() <= 360, "{} points", r.series.len());
    assert!(r.bucket_secs >= 240);
    assert_eq!(r.series[0].at, t(0));
    assert_eq!(r.series.iter().map(|p| u64::from(p.requests_to_speak)).sum::<u64>(), 24);
    assert_eq!(r.listen_minutes, 1440.0);
    // Each point's average is its share of the one listener.
    assert!(r.series.iter().all(|p| (p.average - 1.0).abs() < 1e-9), "{:?}", &r.series[..3]);
}

#[test]
fn a_clock_that_steps_back_or_jumps_far_does_no_harm() {
    let mut s = stats();
    s.joined(Protocol::Ws, key(1), t(100));
    s.left(t(100), t(50));
    s.joined(Protocol::Ws, key(2), t(u64::MAX / 4));
    let r = s.report(t(0));
    assert_eq!(r.listeners.now, 1);
    assert!(r.series.len() <= 360);
}

#[test]
fn after_a_restart_open_sessions_end_when_last_saved() {
    let mut s = stats();
    s.joined(Protocol::Ws, key(1), t(0));
    s.joined(Protocol::Ws, key(2), t(0));
    s.advance(t(100));
    let saved = serde_json::to_string(&s).expect("serialises");
    let back: SpaceStats = serde_json::from_str(&saved).expect("reads back");
    let mut back = back.resumed();
    let r = back.report(t(700));
    assert_eq!(r.listeners.now, 0);
    assert_eq!(r.listeners.peak, 2);
    assert_eq!(r.listeners.unique, 2);
    assert_eq!(r.sessions, 2);
    let share = |after| r.retention.iter().find(|p| p.after_secs == after).map(|p| p.share);
    assert_eq!(share(60), Some(1.0));
    assert_eq!(share(120), Some(0.0));
    // A leave of a session from before the restart changes no count below zero.
    back.left(t(0), t(701));
    assert_eq!(back.current(), 0);
}

#[test]
fn totals_merge_unique_listeners_across_spaces() {
    let (mut a, mut b) = (stats(), stats());
    for i in 0..10 {
        a.joined(Protocol::Ws, key(i), t(1));
    }
    for i in 5..20 {
        b.joined(Protocol::Ogg, key(i), t(1));
    }
    let mut totals = TotalsBuilder::default();
    totals.add(&a.report(t(61)), a.unique_sketch());
    totals.add(&b.report(t(61)), b.unique_sketch());
    let t = totals.finish();
    assert_eq!(t.spaces, 2);
    assert_eq!(t.unique_listeners, 20);
    assert_eq!(t.joins.total(), 25);
    assert_eq!(t.largest_peak, 15);
    assert_eq!(t.listen_minutes, 25.0);
}

#[test]
fn a_million_distinct_listeners_take_no_more_memory_than_one() {
    let mut s = stats();
    let before = serde_json::to_string(&s).expect("serialises").len();
    for i in 0..1_000_000u64 {
        s.joined(Protocol::Hls, mixed(i), t(i / 1000));
    }
    let after = serde_json::to_string(&s).expect("serialises").len();
    // The series grew by its bounded buckets; nothing grew per listener.
    assert!(after < before + 360 * 120, "{before} -> {after} bytes");
    let r = s.report(t(1000));
    let u = r.listeners.unique as f64;
    assert!((u - 1e6).abs() / 1e6 < 0.05, "unique {u}");
}

#[derive(Debug, Clone)]
enum Step {
    Join(u8, u8),
    Leave(usize),
    Hand,
    React(u8),
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..4, 0u8..20).prop_map(|(p, k)| Step::Join(p, k)),
        (0usize..50).prop_map(Step::Leave),
        Just(Step::Hand),
        (1u8..20).prop_map(Step::React),
        (0u16..2_000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever happens, the numbers agree with each other and with a plain model.
    #[test]
    fn reports_agree_with_a_model(steps in proptest::collection::vec(step(), 0..300)) {
        let config = StatsConfig { bucket_secs: 10, max_points: 16 };
        let mut s = SpaceStats::new(config, t(0));
        let mut now = 0u64;
        let mut open: Vec<u64> = Vec::new();
        let (mut peak, mut joins, mut hands, mut reactions, mut listened) = (0usize, 0u64, 0u64, 0u64, 0u64);
        let mut keys = std::collections::BTreeSet::new();
        for st in steps {
            match st {
                Step::Join(p, k) => {
                    let protocol = [Protocol::Ws, Protocol::Ogg, Protocol::Webrtc, Protocol::Hls][usize::from(p)];
                    s.joined(protocol, key(u64::from(k)), t(now));
                    joins += 1;
                    keys.insert(k);
                    if protocol.connected() {
                        open.push(now);
                        peak = peak.max(open.len());
                    }
                }
                Step::Leave(i) if !open.is_empty() => {
                    let joined = open.remove(i % open.len());
                    s.left(t(joined), t(now));
                }
                Step::Leave(_) => {}
                Step::Hand => { s.hand_raised(t(now)); hands += 1; }
                Step::React(n) => {
                    s.reacted(t(now), &BTreeMap::from([(Reaction::Fire, u32::from(n))]), t(now));
                    reactions += u64::from(n);
                }
                Step::Wait(secs) => {
                    listened += open.len() as u64 * u64::from(secs);
                    now += u64::from(secs);
                }
            }
            prop_assert!(s.series.len() <= config.max_points);
        }
        let r = s.report(t(now));
        prop_assert_eq!(r.listeners.now as usize, open.len());
        prop_assert_eq!(r.listeners.peak as usize, peak);
        prop_assert_eq!(r.joins.total(), joins);
        prop_assert_eq!(r.listeners.unique, keys.len() as u64);
        prop_assert_eq!(r.requests_to_speak, hands);
        prop_assert_eq!(r.reactions.total, reactions);
        prop_assert!((r.listen_minutes - listened as f64 / 60.0).abs() < 0.01);
        // The series holds every event and every listener-second.
        let series_reactions: u64 = r.series.iter().map(|p| u64::from(p.reactions)).sum();
        let series_joins: u64 = r.series.iter().map(|p| u64::from(p.joins)).sum();
        let series_hands: u64 = r.series.iter().map(|p| u64::from(p.requests_to_speak)).sum();
        prop_assert_eq!(series_reactions, reactions);
        prop_assert_eq!(series_joins, joins);
        prop_assert_eq!(series_hands, hands);
        let series_secs: u64 = s.series.iter().map(|b| b.listener_secs).sum();
        prop_assert_eq!(series_secs, listened);
        prop_assert!(r.series.iter().all(|p| p.peak <= r.listeners.peak));
        // Retention starts at everyone and never rises.
        if let Some(first) = r.retention.first() {
            prop_assert!(r.sessions == 0 || (first.share - 1.0).abs() < 1e-9);
        }
        prop_assert!(r.retention.windows(2).all(|w| w[1].share <= w[0].share + 1e-9));
        let open_count: u64 = s.series.iter().map(|b| u64::from(b.open)).sum();
        prop_assert_eq!(open_count, open.len() as u64);
    }
}
