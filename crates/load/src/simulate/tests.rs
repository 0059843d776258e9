use super::*;

/// A small fleet: `edges` edges of `capacity`, 1,000 joins/s each, the origin calling
/// `call_rate`/s; `joiners` arriving evenly over `window` seconds.
fn config(joiners: u64, window: f64, edges: usize, capacity: u64, call_rate: u64) -> Config {
    Config {
        door_model: DoorModel::PerArrival,
        doors: 0,
        joiners,
        profile: Profile { window_secs: window, rise_secs: 0.0, decay_secs: 0.0 },
        signed_in_share: 0.5,
        edges,
        edge_capacity: capacity,
        join_rate_per_edge: 1_000.0,
        call_rate,
        patience_us: 120 * SECOND_US,
        leave_per_s: 0.0,
        retry_spread: SERVER_RETRY_SPREAD,
        costs: Costs { door_us: 5_000, connect_us: 3_000, first_frame_us: 3_000 },
        seed: 7,
        trace: true,
    }
}

#[test]
fn under_capacity_everyone_walks_straight_in() {
    let c = config(1_000, 10.0, 4, 10_000, 4_000);
    let Outcome { report: r, traces } = run(&c);
    assert_eq!((r.admitted, r.timed_out, r.refused_at_edge), (1_000, 0, 0));
    assert_eq!((r.queue_peak, r.admitted_after_waiting), (0, 0), "nobody waited");
    assert_eq!(r.visits_per_joiner, 1.0);
    // Door, connection, one join's set-up on an idle edge (1 ms at 1,000/s), first frame.
    let exact = 5_000 + 3_000 + 1_000 + 3_000;
    assert!(traces.iter().all(|t| t.first_audio == Some(t.arrived + exact)));
    assert_eq!(r.ttfa_ms.max, 12.0);
    assert!(r.violations.none());
    // One number and one ticket use per joiner at the doors.
    assert_eq!(r.redis_door_ops, 2_000);
}

#[test]
fn over_the_call_rate_the_line_is_called_in_order_at_the_rate() {
    let c = config(5_000, 1.0, 4, 100_000, 1_000);
    let Outcome { report: r, traces } = run(&c);
    assert_eq!((r.admitted, r.timed_out), (5_000, 0));
    assert!(r.admitted_after_waiting >= 3_000, "most waited: {}", r.admitted_after_waiting);
    assert!(r.violations.none());
    for signed_in in [true, false] {
        // Within a line, by arrival: numbers in order, and called in order.
        let lane: Vec<&Trace> = traces.iter().filter(|t| t.signed_in == signed_in).collect();
        assert!(lane.windows(2).all(|w| w[0].number < w[1].number));
        assert!(lane.windows(2).all(|w| w[0].called_at <= w[1].called_at), "FIFO");
        assert!(lane.iter().all(|t| t.first_audio.is_some_and(|a| a > t.called_at)));
    }
    // Each round calls at most the rate: by the k-th second, at most k rounds' worth.
    for k in 1..=10u64 {
        let called = traces.iter().filter(|t| t.called_at < k * SECOND_US).count() as u64;
        assert!(called <= k * 1_000, "{called} called before {k} s");
    }
    // The signed-in line is called first.
    let mean = |s: bool| {
        let lane: Vec<u64> =
            traces.iter().filter(|t| t.signed_in == s).map(|t| t.called_at).collect();
        lane.iter().sum::<u64>() / lane.len() as u64
    };
    assert!(mean(true) < mean(false));
}

#[test]
fn over_the_fleet_capacity_it_fills_exactly_and_the_rest_give_up() {
    let mut c = config(1_000, 2.0, 3, 100, 10_000);
    c.patience_us = 20 * SECOND_US;
    let Outcome { report: r, traces } = run(&c);
    assert_eq!(r.admitted, 300, "every place taken, none twice");
    assert_eq!(r.timed_out, 700);
    assert_eq!(r.edge_listeners_max_min, (100, 100));
    assert!(r.violations.none());
    let placed = traces.iter().filter(|t| t.first_audio.is_some()).count();
    assert_eq!(placed, 300, "one place per joiner");
}

#[test]
fn counts_a_heartbeat_old_let_edges_refuse_but_never_overfill() {
    // A crowd twice the fleet at once: the origin calls on counts up to a second old.
    let mut c = config(2_000, 0.5, 5, 200, 5_000);
    c.patience_us = 30 * SECOND_US;
    c.trace = false;
    let r = run(&c).report;
    assert!(r.refused_at_edge > 0, "the lag shows");
    assert_eq!(r.admitted, 1_000);
    assert!(r.violations.none());
}

#[test]
fn a_seed_gives_the_same_run_and_another_seed_another() {
    let mut c = config(3_000, 1.0, 4, 100_000, 1_000);
    c.trace = false;
    let a = run(&c).report;
    assert_eq!(a, run(&c).report);
    c.seed = 8;
    let b = run(&c).report;
    assert_ne!(a.series, b.series);
    assert_eq!(b.admitted, 3_000);
}

#[test]
fn the_largest_burst_of_a_small_fleet_is_its_capacity() {
    let mut c = config(100, 1.0, 2, 200, 10_000);
    c.patience_us = 30 * SECOND_US;
    let burst = largest_burst(&c, 0.01);
    assert_eq!(burst.bound, "fleet full");
    assert!(burst.joiners <= 400 && burst.joiners >= 390, "{burst:?}");
    assert!(burst.failed_at.0 > 400 || burst.failed_at.1 > 0);
}

#[test]
fn doors_with_blocks_cost_redis_a_fraction_and_keep_the_line_in_order() {
    // 40,000 joiners in 2 s at four doors, against a line called at 10,000/s: most wait.
    let base = Config { doors: 4, ..config(40_000, 2.0, 4, 100_000, 10_000) };
    let per_arrival = run(&base).report;
    let Outcome { report: r, traces } = run(&Config { door_model: DoorModel::Blocks, ..base });
    assert_eq!((r.admitted, r.timed_out), (40_000, 0));
    assert!(r.violations.none(), "{:?}", r.violations);
    assert!(per_arrival.violations.none());
    assert!(
        r.redis_takes_per_s_peak * 10 < per_arrival.redis_takes_per_s_peak,
        "numbers taken per second: {} in blocks, {} one by one",
        r.redis_takes_per_s_peak,
        per_arrival.redis_takes_per_s_peak
    );
    assert!(
        r.redis_door_ops * 3 < per_arrival.redis_door_ops,
        "door operations: {} in blocks, {} one by one",
        r.redis_door_ops,
        per_arrival.redis_door_ops
    );
    // First come, first served to within a block's life and a read of the mark: nobody is
    // called after someone who arrived half a second later in the same line.
    for signed_in in [true, false] {
        let mut lane: Vec<&Trace> = traces.iter().filter(|t| t.signed_in == signed_in).collect();
        lane.sort_by_key(|t| t.arrived);
        let (mut earlier, mut latest_call) = (0, 0);
        for b in &lane {
            while lane[earlier].arrived + 500_000 <= b.arrived {
                latest_call = latest_call.max(lane[earlier].called_at);
                earlier += 1;
            }
            assert!(latest_call <= b.called_at, "called after a later arrival: {b:?}");
        }
    }
}
