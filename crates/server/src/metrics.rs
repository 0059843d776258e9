//! Prometheus metrics: names in one place, and the process-wide recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Gauge: listeners connected, by `space` and `protocol` (`ws`, `ogg`).
pub const LISTENERS: &str = "townhall_listeners";
/// Gauge: speakers on stage, by `space`.
pub const SPEAKERS: &str = "townhall_speakers";
/// Counter: program frames written to listeners, by `protocol`.
pub const FRAMES_SENT: &str = "townhall_frames_sent_total";
/// Counter: program frames a listener skipped because it could not keep up, by `protocol`.
pub const FRAMES_DROPPED: &str = "townhall_frames_dropped_total";
/// Counter: listeners that connected, by `protocol`.
pub const JOINS: &str = "townhall_joins_total";
/// Counter: requests refused, by `reason` (the API error code).
pub const REJECTIONS: &str = "townhall_rejections_total";
/// Counter: speaker frames, by `result` (`accepted`, `invalid`, `rate_limited`, `overloaded`).
pub const SPEAKER_FRAMES: &str = "townhall_speaker_frames_total";
/// Counter: mixer ticks run, by `thread` (the mixer thread's index; each ticks 50 times a
/// second, whatever its spaces).
pub const MIXER_TICKS: &str = "townhall_mixer_ticks_total";
/// Counter: mixer ticks that started more than one frame late, by `thread`.
pub const MIXER_LATE_TICKS: &str = "townhall_mixer_late_ticks_total";
/// Histogram (summary): seconds each mixer tick started after its time, by `thread` (a thread
/// with more mixing than its core holds drifts towards 20 ms and beyond).
pub const MIXER_TICK_LAG: &str = "townhall_mixer_tick_lag_seconds";
/// Gauge: spaces running on each mixer thread, by `thread`.
pub const MIXER_SPACES: &str = "townhall_mixer_spaces";
/// Gauge: speakers connected to each mixer thread's spaces, by `thread`.
pub const MIXER_SPEAKERS: &str = "townhall_mixer_speakers";
/// Counter: connections closed because their socket stopped accepting bytes.
pub const STALLED_CONNECTIONS: &str = "townhall_stalled_connections_total";

/// Counter: connections and requests refused by the shield, by `reason` (`address`, `subnet`).
pub const SHIELD_REJECTIONS: &str = "townhall_shield_rejections_total";
/// Counter: waiting-room decisions, by `result` (`admitted`, `queued`).
pub const ADMISSIONS: &str = "townhall_admissions_total";
/// Gauge: joiners holding a waiting-room ticket not yet called.
pub const WAITING: &str = "townhall_waiting_room_queued";

/// Gauge: 1 for the current traffic verdict (`normal`, `flash_crowd`, `attack`), 0 for others.
pub const VERDICT: &str = "townhall_traffic_verdict";
/// Gauge: the classifier's evidence, by `signal`.
pub const EVIDENCE: &str = "townhall_traffic_evidence";

/// Gauge: smoothed event-loop lag, seconds.
pub const LAG: &str = "townhall_event_loop_lag_seconds";
/// Gauge: 1 while the node measures itself overloaded (admitting nobody new).
pub const OVERLOADED: &str = "townhall_overloaded";

/// Counter: writes of a space's state the database refused (each is retried until stored).
pub const STORE_FAILURES: &str = "townhall_store_write_failures_total";

/// Counter: HTTP requests answered by the router, by `route` (its pattern) and `status`.
pub const HTTP_REQUESTS: &str = "townhall_http_requests_total";

/// Counter: HLS requests reaching the origin, by `kind` (playlist, blocking_playlist, part,
/// segment, init, master): behind a cache this should not grow with the audience.
pub const HLS_REQUESTS: &str = "townhall_hls_requests_total";

/// Gauge: WebRTC sessions held, by `kind` (`whip`, `whep`).
pub const WEBRTC_SESSIONS: &str = "townhall_webrtc_sessions";
/// Gauge: WebRTC sessions held (reserved or live) per RTC thread, by `thread` (`0`, `1`, ...).
pub const WEBRTC_THREAD_SESSIONS: &str = "townhall_webrtc_thread_sessions";
/// Counter: program frames written to WHEP listeners per RTC thread, by `thread`.
pub const WEBRTC_THREAD_FRAMES: &str = "townhall_webrtc_thread_frames_total";
/// Counter: WebRTC datagrams, by `result` (`sent`, `dropped` when the socket buffer was full,
/// `received`).
pub const WEBRTC_DATAGRAMS: &str = "townhall_webrtc_datagrams_total";
/// Counter: system calls that sent WebRTC datagrams (one `sendmmsg` carries up to 64): sent
/// datagrams over this is the batch size the RTC threads reach.
pub const WEBRTC_SEND_CALLS: &str = "townhall_webrtc_send_calls_total";
/// Histogram (summary): seconds from mixing a program frame to the WebRTC loop writing it to
/// its WHEP listeners (whether the loop keeps up).
pub const WEBRTC_EGRESS_LAG: &str = "townhall_webrtc_egress_lag_seconds";

/// Counter: program frames an edge received from origins, by `result` (`relayed`, `dropped`
/// when its engine queue was full, `malformed`).
pub const RELAY_FRAMES: &str = "townhall_relay_frames_total";
/// Gauge: 1 while this node reaches the cluster's Redis, 0 while it does not.
pub const CLUSTER_REDIS_UP: &str = "townhall_cluster_redis_up";
/// Histogram (summary): seconds a door waited for the cluster's line in Redis (answers in time
/// only; late ones admit on the node's own line and are logged).
pub const CLUSTER_DOOR_SECONDS: &str = "townhall_cluster_door_seconds";
/// Gauge (origins): places the door holds for joiners admitted but not yet in the listener
/// counts (`townhall_shield::cluster_line::Pending`).
pub const CLUSTER_PLACES_HELD: &str = "townhall_cluster_places_held";
/// Numbers a door took in a block and never handed out (the block expired first).
pub const CLUSTER_VOID_NUMBERS: &str = "townhall_cluster_void_numbers_total";

/// Gauge: spaces being captioned on this node.
pub const CAPTIONED_SPACES: &str = "townhall_captioned_spaces";
/// Counter: program frames the captions stage never heard, by `reason` (`behind`: its queue
/// was full; `worker_behind`: the worker's pipe was full; `no_worker`: the engine was starting).
pub const CAPTION_FRAMES_DROPPED: &str = "townhall_captions_frames_dropped_total";
/// Counter: caption cues sent to listeners, by `kind` (`interim`, `final`).
pub const CAPTION_CUES: &str = "townhall_caption_cues_total";
/// Counter: phrases whose final never came (the worker was too slow, stopped or restarted).
pub const CAPTION_PHRASES_LOST: &str = "townhall_caption_phrases_lost_total";
/// Counter: caption workers started, by `result` (`ready`, `failed`).
pub const CAPTION_WORKERS: &str = "townhall_caption_workers_total";

/// Counts each routed request by route pattern and status (for cache effectiveness: how often
/// the origin served what a CDN should have).
pub async fn count_requests(
    matched: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let res = next.run(req).await;
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => res.status().as_u16().to_string())
        .increment(1);
    res
}

/// The process-wide Prometheus recorder (installed once; every server in the process shares it).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program's); then ours
            // only renders what it sees, which is nothing, and /metrics says so.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(LISTENERS, "Listeners connected, by space and protocol.");
    describe_gauge!(SPEAKERS, "Speakers on stage, by space.");
    describe_gauge!(CAPTIONED_SPACES, "Spaces being captioned on this node.");
    describe_counter!(CAPTION_FRAMES_DROPPED, "Program frames the captions stage never heard.");
    describe_counter!(CAPTION_CUES, "Caption cues sent to listeners, by kind.");
    describe_counter!(CAPTION_PHRASES_LOST, "Phrases whose final cue never came.");
    describe_counter!(CAPTION_WORKERS, "Caption workers started, by result.");
    describe_counter!(FRAMES_SENT, "Program frames written to listeners, by protocol.");
    describe_counter!(FRAMES_DROPPED, "Program frames skipped by listeners that fell behind.");
    describe_counter!(JOINS, "Listener connections accepted, by protocol.");
    describe_counter!(REJECTIONS, "Requests refused, by reason.");
    describe_counter!(SPEAKER_FRAMES, "Speaker frames received, by result.");
    describe_counter!(MIXER_TICKS, "Mixer ticks run, by mixer thread.");
    describe_counter!(MIXER_LATE_TICKS, "Mixer ticks started more than a frame late, by thread.");
    describe_histogram!(MIXER_TICK_LAG, "Seconds each mixer tick started late, by thread.");
    describe_gauge!(MIXER_SPACES, "Spaces running on each mixer thread.");
    describe_gauge!(MIXER_SPEAKERS, "Speakers connected to each mixer thread's spaces.");
    describe_counter!(STALLED_CONNECTIONS, "Connections closed for not reading.");
    describe_counter!(SHIELD_REJECTIONS, "Connections and requests refused by per-client limits.");
    describe_counter!(ADMISSIONS, "Waiting-room decisions, by result.");
    describe_gauge!(WAITING, "Joiners holding a waiting-room ticket not yet called.");
    describe_gauge!(VERDICT, "1 for the current traffic verdict: normal, flash_crowd or attack.");
    describe_gauge!(EVIDENCE, "The crowd-or-attack classifier's evidence, by signal.");
    describe_gauge!(LAG, "Smoothed event-loop lag, seconds.");
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered by the router, by route and status.");
    describe_counter!(HLS_REQUESTS, "HLS requests reaching the origin, by kind.");
    describe_gauge!(WEBRTC_SESSIONS, "WebRTC sessions held, by kind (whip, whep).");
    describe_gauge!(WEBRTC_THREAD_SESSIONS, "WebRTC sessions held per RTC thread.");
    describe_counter!(
        WEBRTC_THREAD_FRAMES,
        "Program frames written to WHEP listeners per RTC thread."
    );
    describe_counter!(WEBRTC_DATAGRAMS, "WebRTC datagrams sent, dropped or received.");
    describe_counter!(WEBRTC_SEND_CALLS, "System calls that sent WebRTC datagrams (batches).");
    describe_histogram!(WEBRTC_EGRESS_LAG, "Seconds from mixing to the WebRTC loop's writes.");
    describe_histogram!(CLUSTER_DOOR_SECONDS, "Seconds a door waited for the cluster's line.");
    describe_gauge!(CLUSTER_PLACES_HELD, "Places held for joiners admitted, not yet counted.");
    describe_counter!(
        CLUSTER_VOID_NUMBERS,
        "Waiting-line numbers a door took in a block and never handed out."
    );
    describe_gauge!(OVERLOADED, "1 while the node admits nobody new because it is overloaded.");
}
