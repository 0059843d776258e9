//! The page in a real browser: headless Chromium, driven over WebDriver (chromedriver), against a
//! real server on loopback. Listening must produce audible output; speaking from Chromium's fake
//! microphone must reach a Rust listener (WebSocket fallback) and, over WHIP, a second page
//! listening over WHEP.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Set
//! `TOWNHALL_SKIP_BROWSER=1` to skip on a machine without them.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use townhall_core::Role;
use townhall_media::analysis::rms;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A WebDriver session.
struct Browser {
    http: reqwest::Client,
    base: String,
    _driver: Driver,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Returns `None` (and says why) when the browser test is to be skipped.
fn browser_available() -> Option<()> {
    if std::env::var("TOWNHALL_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("TOWNHALL_SKIP_BROWSER=1: skipping the browser test");
        return None;
    }
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), or set TOWNHALL_SKIP_BROWSER=1"
        );
    }
    Some(())
}

impl Browser {
    async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// A browser with `extra` command-line flags.
    async fn start_with(extra: &[String]) -> Browser {
        let port = free_port();
        let profile =
            std::env::temp_dir().join(format!("townhall-chromium-{}-{port}", std::process::id()));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port, profile: profile.clone() };
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let status = format!("http://127.0.0.1:{port}/status");
        let mut ready = false;
        for _ in 0..100 {
            if http.get(&status).send().await.is_ok_and(|r| r.status().is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not come up");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            // WebRTC: the server's candidate is on loopback, where Chromium gathers none
            // otherwise (a machine with only loopback would have no WebRTC at all).
            "--allow-loopback-in-peer-connection",
        ];
        let mut all_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all_args.push(format!("--user-data-dir={}", profile.display()));
        all_args.extend(extra.iter().cloned());
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": all_args }
            }}
        });
        let res: Value = http
            .post(format!("http://127.0.0.1:{}/session", driver.port))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        let base = format!("http://127.0.0.1:{}/session/{id}", driver.port);
        Browser { http, base, _driver: driver }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let req = self.http.request(method, format!("{}{path}", self.base));
        // A GET carries no body.
        let req = if body.is_null() { req } else { req.json(&body) };
        let res = req.send().await.expect("webdriver request");
        let value: Value = res.json().await.expect("webdriver json");
        if let Some(err) = value["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", value["value"]["message"]);
        }
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", json!({ "script": js, "args": [] })).await
    }

    /// Runs an asynchronous script: it ends by calling its last argument with the result.
    async fn script_async(&self, js: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/async", json!({ "script": js, "args": [] })).await
    }

    /// Presses and releases one key (a WebDriver key: `TAB`, `ENTER`), as a person at the
    /// keyboard does: the page gets real key events, and focus moves as it would.
    async fn press(&self, key: &str) {
        let actions = json!({ "actions": [{
            "type": "key", "id": "keyboard",
            "actions": [{ "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }]
        }]});
        self.cmd(reqwest::Method::POST, "/actions", actions).await;
    }

    /// Clicks the element matching `#selector` (a real WebDriver click: a user gesture).
    async fn click(&self, selector: &str) {
        let css = format!("#{selector}");
        let el = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        let key = el
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_owned();
        self.cmd(reqwest::Method::POST, &format!("/element/{key}/click"), json!({})).await;
    }

    /// Polls a script until it returns a number above `threshold`; returns the best value seen.
    async fn wait_above(&self, js: &str, threshold: f64, within: Duration) -> f64 {
        let deadline = tokio::time::Instant::now() + within;
        let mut best = 0.0f64;
        while tokio::time::Instant::now() < deadline {
            let v = self.script(js).await.as_f64().unwrap_or(0.0);
            best = best.max(v);
            if v > threshold {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        best
    }

    /// Polls a script until `ok` accepts its value; returns the last value (check it: the wait
    /// ends at `within` either way).
    async fn wait_for(&self, js: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.script(js).await;
            if ok(&v) || tokio::time::Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resizes the browser window so that the page's viewport is `width`×`height` CSS pixels
    /// (the window's own frame taken into account).
    async fn set_viewport(&self, width: i64, height: i64) {
        let mut rect = json!({ "width": width, "height": height });
        for _ in 0..2 {
            self.cmd(reqwest::Method::POST, "/window/rect", rect.clone()).await;
            let inner = self.script("return [window.innerWidth, window.innerHeight]").await;
            let (w, h) = (inner[0].as_i64().unwrap_or(0), inner[1].as_i64().unwrap_or(0));
            if (w, h) == (width, height) {
                return;
            }
            let (rw, rh) =
                (rect["width"].as_i64().unwrap_or(0), rect["height"].as_i64().unwrap_or(0));
            rect = json!({ "width": rw + width - w, "height": rh + height - h });
        }
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.cmd(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(path, png).expect("write the screenshot");
    }

    async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

async fn page_text(browser: &Browser, id: &str) -> String {
    browser
        .script(&format!("return document.getElementById('{id}').textContent"))
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_the_demo_space() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr: SocketAddr = server.addr();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(page_text(&browser, "space-title").await, "Townhall demo: a live space");
    assert_eq!(page_text(&browser, "space-state").await, "live");
    assert_eq!(
        browser.script("return window.townhall.level()").await.as_f64(),
        Some(0.0),
        "silent before Listen"
    );
    browser.click("listen").await;
    let level =
        browser.wait_above("return window.townhall.level()", 0.01, Duration::from_secs(20)).await;
    let state = browser.script("return window.townhall.state()").await;
    assert!(level > 0.01, "the page never played audible audio (best RMS {level}, state {state})");
    assert_eq!(state, "listening");
    let listeners =
        browser.wait_above("return window.townhall.listeners()", 0.5, Duration::from_secs(5)).await;
    assert!(listeners >= 1.0, "the page shows its own listener: {listeners}");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_creates_a_space_speaks_from_the_microphone_over_the_websocket_and_ends_it() {
    if browser_available().is_none() {
        return;
    }
    // A node that takes no WebRTC session (503): the page falls back to the WebSocket.
    let server =
        server_with(townhall_server::Config { webrtc_max_sessions: 0, ..Default::default() }).await;
    let addr = server.addr();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let token = server.host_token().to_owned();
    browser
        .script(&format!("localStorage.setItem('townhall.token', {}); return true", json!(token)))
        .await;
    browser.goto(&format!("http://{addr}/")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The host panel shows the node's traffic verdict to an operator token.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while browser.script("return window.townhall.verdict()").await.as_str() != Some("normal") {
        assert!(tokio::time::Instant::now() < deadline, "no traffic verdict in the host panel");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser
        .script("document.getElementById('new-title').value = 'Browser mic test'; return true")
        .await;
    browser.click("create-form button[type=submit]").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while browser.script("return window.townhall.space()").await.as_str()
        != Some("browser-mic-test")
    {
        assert!(tokio::time::Instant::now() < deadline, "the page did not open the new space");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Rust listener hears what the page sends.
    let listener = ws(addr, "/ws/browser-mic-test?batch=5").await;
    let listening = tokio::spawn(listen_ws(listener, Duration::from_secs(12)));
    browser.click("speak").await;
    let mic = browser
        .wait_above("return window.townhall.micLevel()", 0.01, Duration::from_secs(10))
        .await;
    assert!(mic > 0.01, "the fake microphone produced no signal in the page: {mic}");
    let rtc = browser.script("return window.townhall.rtc()").await;
    assert_eq!(rtc["speakMode"], "websocket", "{rtc}");
    let mode = page_text(&browser, "speak-mode").await;
    assert_eq!(
        mode,
        concat!(
            "speaking over WebSocket, because WebRTC failed: ",
            "the server is busy or restarting (retry in 5 s)"
        )
    );
    let heard = listening.await.expect("listener");
    let loud = heard.pcm.chunks(4_800).filter(|c| rms(c) > 0.01).count();
    assert!(loud >= 5, "the listener heard the page's microphone in only {loud} 100 ms windows");
    let view: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/browser-mic-test"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["speakers"][0]["identity"], "host", "{view}");

    browser.click("end-space").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = http()
            .get(format!("http://{addr}/api/v1/spaces/browser-mic-test"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if v["state"] == "ended" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page did not end the space: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_a_full_node_waits_in_line_with_an_honest_position() {
    if browser_available().is_none() {
        return;
    }
    let server =
        server_with(townhall_server::Config { max_listeners: 0, ..Default::default() }).await;
    let addr = server.addr();
    // A private space (no HLS to fall back to): the page must wait in line.
    let create = json!({ "id": "vip", "title": "VIP", "live": true, "public": false });
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(server.host_token())
        .json(&create)
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    // Someone signed in is already in line.
    let member = token("first", townhall_core::Role::Listener, "vip");
    let first = http()
        .post(format!("http://{addr}/api/v1/spaces/vip/join"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("join");
    assert_eq!(first.status(), 202);
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let host_token = json!(server.host_token());
    browser
        .script(&format!("localStorage.setItem('townhall.token', {host_token}); return true"))
        .await;
    browser.goto(&format!("http://{addr}/#/space/vip")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    browser.click("listen").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut state = Value::Null;
    while tokio::time::Instant::now() < deadline {
        state = browser.script("return window.townhall.state()").await;
        if state.as_str().is_some_and(|s| s.starts_with("waiting room")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state, "waiting room: number 2 in line");
    assert_eq!(page_text(&browser, "listen-state").await, "waiting room: number 2 in line");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_scale_mode_the_page_plays_ll_hls() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let on = json!({ "prefer_hls": true });
    let res = http()
        .put(format!("http://{addr}/api/v1/admin/shield"))
        .bearer_auth(server.host_token())
        .json(&on)
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let view: Value = http()
        .get(format!("http://{addr}/api/v1/spaces/demo"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["listen_mode"], "scale");
    // Let a few parts exist, then listen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    browser.click("listen").await;
    let level =
        browser.wait_above("return window.townhall.level()", 0.01, Duration::from_secs(25)).await;
    let state = browser.script("return window.townhall.state()").await;
    assert_eq!(state, "listening (HLS)");
    assert!(level > 0.01, "no audio over HLS (best RMS {level})");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_attack_the_page_proves_it_is_not_a_bot_and_plays() {
    if browser_available().is_none() {
        return;
    }
    let server =
        demo_server(townhall_server::Config { pow_difficulty: 12, ..Default::default() }).await;
    let addr = server.addr();
    let on = json!({ "require_pow": true });
    let res = http()
        .put(format!("http://{addr}/api/v1/admin/shield"))
        .bearer_auth(server.host_token())
        .json(&on)
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    browser.click("listen").await;
    let level =
        browser.wait_above("return window.townhall.level()", 0.01, Duration::from_secs(25)).await;
    let state = browser.script("return window.townhall.state()").await;
    assert!(level > 0.01, "no audio after the proof of work (state {state})");
    browser.close().await;
    server.shutdown().await;
}

/// `GET /api/v1/spaces/{id}`.
async fn space_view(addr: SocketAddr, id: &str) -> Value {
    http()
        .get(format!("http://{addr}/api/v1/spaces/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// The sum of a counter's samples whose labels include every one of `labels`.
async fn counter(addr: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    let text =
        http().get(format!("http://{addr}/metrics")).send().await.expect("metrics").text().await;
    text.expect("metrics text")
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_speaks_over_whip_and_another_hears_it_over_whep() {
    if browser_available().is_none() {
        return;
    }
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "rtc-stage").await;
    let page = format!("http://{addr}/#/space/rtc-stage");
    let rtc = "return window.townhall.rtc()";
    let stats = |which: &str| format!("return window.townhall.rtcStats('{which}')");
    let secs = Duration::from_secs;

    // A listener over WHEP connects while nobody speaks: it receives the program stream (silent
    // frames) and measures silence.
    let listener = Browser::start().await;
    listener.goto(&page).await;
    let shown =
        listener.wait_for("return window.townhall.space()", secs(5), |v| v == "rtc-stage").await;
    assert_eq!(shown, "rtc-stage", "the page did not show the space");
    listener.click("listen-rtc").await;
    let state = listener.wait_for(rtc, secs(15), |v| v["listen"] == "connected").await;
    let why = listener.script("return window.townhall.state()").await;
    assert_eq!(state["listen"], "connected", "WHEP did not connect: {why}");
    let flowing = listener
        .wait_for(&stats("listen"), secs(5), |v| v["packetsReceived"].as_u64() >= Some(25))
        .await;
    assert!(flowing["packetsReceived"].as_u64() >= Some(25), "no program packets: {flowing}");
    let quiet = listener.script("return window.townhall.heard()").await;
    assert!(
        quiet["peak"].as_f64().is_some_and(|p| p < 0.003),
        "sound before anyone spoke: {quiet}"
    );
    let view = space_view(addr, "rtc-stage").await;
    assert_eq!(view["listeners_by_protocol"]["webrtc"], 1, "{view}");

    // The host speaks from the fake microphone (a 400 Hz beep every half second) over WHIP.
    let speaker = Browser::start().await;
    speaker.goto(&format!("http://{addr}/")).await;
    let token = json!(server.host_token());
    speaker.script(&format!("localStorage.setItem('townhall.token', {token}); return true")).await;
    speaker.goto(&page).await;
    let controls = speaker
        .wait_for("return !document.getElementById('host-controls').hidden", secs(5), |v| v == true)
        .await;
    assert_eq!(controls, true, "no host controls");
    speaker.click("speak").await;
    let state = speaker.wait_for(rtc, secs(15), |v| v["speak"] == "connected").await;
    let line = page_text(&speaker, "speak-state").await;
    assert_eq!(state["speak"], "connected", "WHIP did not connect: {line}");
    assert_eq!(state["speakMode"], "webrtc", "{state}");
    assert_eq!(page_text(&speaker, "speak-mode").await, "speaking over WebRTC (WHIP)");
    assert_eq!(line, "connected");
    let view = space_view(addr, "rtc-stage").await;
    assert_eq!(view["speakers"][0]["identity"], "host", "{view}");

    // The listener hears the beeps through its AnalyserNode.
    let heard = listener
        .wait_for("return window.townhall.heard()", secs(15), |v| v["loud"].as_u64() >= Some(3))
        .await;
    let sent = speaker.script(&stats("speak")).await;
    let got = listener.script(&stats("listen")).await;
    let peak = heard["peak"].as_f64().unwrap_or(0.0);
    assert!(
        peak > 0.02 && heard["loud"].as_u64() >= Some(3),
        "the WHEP page did not hear the WHIP page: {heard}; speaker {sent}; listener {got}"
    );
    // The speaker's `sendrecv` track also brings audio back (its mix-minus: silence here).
    assert!(sent["packetsReceived"].as_u64() > Some(0), "nothing came back to the speaker: {sent}");

    // The listener's session is lost (here: ended behind its back): the page notices, makes a
    // new one and hears again.
    let old = listener.script("return window.townhall.rtcLocation('listen')").await;
    let old = old.as_str().expect("a WHEP session Location").to_owned();
    assert!(old.starts_with(&format!("http://{addr}/whep/rtc-stage/")), "{old}");
    let res = http().delete(&old).send().await.expect("delete");
    assert_eq!(res.status(), 200);
    let again = listener
        .wait_for(
            "return [window.townhall.rtc().listen, window.townhall.rtcLocation('listen')]",
            secs(30),
            |v| v[0] == "connected" && v[1].as_str().is_some_and(|l| l != old),
        )
        .await;
    let why = listener.script("return window.townhall.state()").await;
    assert!(
        again[0] == "connected" && again[1].as_str().is_some_and(|l| l != old),
        "the listener did not reconnect: {again} ({why})"
    );
    let before = listener.script("return window.townhall.heard().loud").await.as_u64().unwrap_or(0);
    let louder = listener
        .wait_for("return window.townhall.heard().loud", secs(10), |v| {
            v.as_u64().is_some_and(|n| n >= before + 3)
        })
        .await;
    assert!(louder.as_u64().is_some_and(|n| n >= before + 3), "silent after reconnecting");

    // Stopping sends DELETE: the speaker leaves the stage at once.
    let route = "route=\"/whip/{id}/{session}\"";
    // The DELETE is answered 200, or 404 when the server saw the peer connection close first
    // and ended the session already: either way the page sent it.
    let ended = async || {
        let mut n = 0.0;
        for status in ["status=\"200\"", "status=\"404\""] {
            n += counter(addr, "townhall_http_requests_total", &[route, status]).await;
        }
        n
    };
    let deletes = ended().await;
    speaker.click("unspeak").await;
    let deadline = tokio::time::Instant::now() + secs(5);
    loop {
        let view = space_view(addr, "rtc-stage").await;
        if view["speakers"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still on stage: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The session ends (and the seat frees) before the answer is counted: wait for the count.
    let deadline = tokio::time::Instant::now() + secs(5);
    let mut after = deletes;
    while after <= deletes && tokio::time::Instant::now() < deadline {
        after = ended().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after > deletes, "the page sent no DELETE for its WHIP session");
    listener.click("stop").await;
    let deadline = tokio::time::Instant::now() + secs(5);
    loop {
        let view = space_view(addr, "rtc-stage").await;
        if view["listeners_by_protocol"]["webrtc"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still counted: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    speaker.close().await;
    listener.close().await;
    server.shutdown().await;
}

/// The loud 100 ms windows (RMS above 0.01) in what a WebSocket listener heard.
fn loud_windows(pcm: &[f32]) -> usize {
    pcm.chunks(4_800).filter(|c| rms(c) > 0.01).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_asks_to_speak_the_host_accepts_it_speaks_and_the_host_mutes_it() {
    if browser_available().is_none() {
        return;
    }
    let server = server().await;
    let addr = server.addr();
    live_space(addr, "town-hall").await;
    let page = format!("http://{addr}/#/space/town-hall");
    let room = "return window.townhall.room()";
    let secs = Duration::from_secs;
    let shown = |id: &str| format!("return !document.getElementById('{id}').hidden");
    let lee_on_stage = |v: &Value| {
        v["speakers"].as_array().and_then(|s| s.iter().find(|m| m["identity"] == "lee")).cloned()
    };

    // Lee has a listener token and listens over the WebSocket: room events come with the program.
    let lee = Browser::start().await;
    lee.goto(&format!("http://{addr}/")).await;
    let lee_token = json!(token("lee", townhall_core::Role::Listener, "town-hall"));
    lee.script(&format!("localStorage.setItem('townhall.token', {lee_token}); return true")).await;
    lee.goto(&page).await;
    let state = lee.wait_for(room, secs(10), |v| v["loaded"] == true).await;
    assert_eq!(state["me"]["identity"], "lee", "{state}");
    assert_eq!(state["me"]["canSpeak"], false, "a listener may not speak yet: {state}");
    assert_eq!(lee.script("return document.getElementById('speak').disabled").await, true);
    assert_eq!(lee.script(&shown("request-speak")).await, true, "no Request to speak");
    assert_eq!(lee.script(&shown("moderation")).await, false, "a listener sees no requests list");
    lee.click("listen").await;
    let state = lee.wait_for(room, secs(10), |v| v["feed"] == "websocket").await;
    assert_eq!(state["feed"], "websocket", "the room does not follow the WebSocket: {state}");

    // Lee raises a hand.
    lee.click("request-speak").await;
    let state = lee.wait_for(room, secs(5), |v| v["me"]["hand"] == true).await;
    assert_eq!(state["me"]["hand"], true, "no raised hand: {state}");
    assert_eq!(lee.script(&shown("cancel-request")).await, true, "no Cancel request");
    assert_eq!(lee.script(&shown("request-speak")).await, false);

    // The host's page (not listening: it follows the room by polling) lists the request and
    // accepts it.
    let host_page = Browser::start().await;
    host_page.goto(&format!("http://{addr}/")).await;
    let host_token = json!(host());
    host_page
        .script(&format!("localStorage.setItem('townhall.token', {host_token}); return true"))
        .await;
    host_page.goto(&page).await;
    let state = host_page.wait_for(room, secs(10), |v| v["hands"] == json!(["lee"])).await;
    assert_eq!(state["hands"], json!(["lee"]), "the host does not see the raised hand: {state}");
    assert_eq!(state["me"]["moderator"], true, "{state}");
    assert_eq!(state["feed"], "poll", "{state}");
    let listed = host_page
        .script("return document.querySelector('#requests [data-who=\"lee\"]')?.textContent || ''")
        .await;
    assert!(listed.as_str().is_some_and(|t| t.contains("lee") && t.contains("Accept")), "{listed}");
    host_page.click("requests [data-action=accept_request][data-target=lee]").await;

    // Lee's page shows lee on stage as a speaker, and Speak becomes available.
    let state = lee.wait_for(room, secs(10), |v| v["me"]["onStage"] == true).await;
    assert_eq!(state["me"]["onStage"], true, "lee is not on stage: {state}");
    assert_eq!(state["me"]["role"], "speaker", "{state}");
    assert_eq!(state["me"]["hand"], false, "{state}");
    let badge = lee
        .script(
            "return document.querySelector('#stage [data-identity=\"lee\"] .badge')?.textContent",
        )
        .await;
    assert_eq!(badge, "Speaker", "the stage list shows lee with a role badge");
    let ready = lee
        .wait_for("return !document.getElementById('speak').disabled", secs(5), |v| v == true)
        .await;
    assert_eq!(ready, true, "Speak is not available on stage");
    assert_eq!(lee.script(&shown("leave-stage")).await, true, "no Leave stage");
    let state = host_page.wait_for(room, secs(5), |v| v["hands"] == json!([])).await;
    assert_eq!(state["hands"], json!([]), "the request stays listed: {state}");

    // Lee speaks from the fake microphone over WHIP with the listener token; a Rust listener
    // hears it.
    lee.click("speak").await;
    let rtc =
        lee.wait_for("return window.townhall.rtc()", secs(15), |v| v["speak"] == "connected").await;
    let line = page_text(&lee, "speak-state").await;
    assert_eq!(rtc["speak"], "connected", "lee's WHIP session did not connect: {line}");
    let heard = listen_ws(ws(addr, "/ws/town-hall?batch=5").await, secs(5)).await;
    let loud = loud_windows(&heard.pcm);
    assert!(loud >= 3, "the listener heard lee in only {loud} 100 ms windows");
    // The host's stage shows lee talking (voice activity from the mixer).
    let talking = host_page
        .wait_for(
            "return document.querySelector('#stage [data-identity=\"lee\"]')?.dataset.talking",
            secs(10),
            |v| v == "true",
        )
        .await;
    assert_eq!(talking, "true", "the host's page never showed lee talking");

    // The host mutes lee from the stage list: lee's page shows it (muted icon, who muted), the
    // host may lift it, and the program goes quiet.
    let mute = "#stage [data-action=mute][data-target=lee]";
    let button = host_page
        .wait_for(&format!("return Boolean(document.querySelector('{mute}'))"), secs(5), |v| {
            v == true
        })
        .await;
    assert_eq!(button, true, "no Mute for lee on the host's page");
    host_page.click("stage [data-action=mute][data-target=lee]").await;
    let state = lee
        .wait_for(room, secs(5), |v| lee_on_stage(v).is_some_and(|m| m["mute"] == "moderator"))
        .await;
    let seat = lee_on_stage(&state);
    assert!(seat.is_some_and(|m| m["muted"] == true), "lee's page does not show the mute: {state}");
    let icon = lee
        .script(
            "const li = document.querySelector('#stage [data-identity=\"lee\"]'); \
             return [li.dataset.mute, Boolean(li.querySelector('.mic-off'))]",
        )
        .await;
    assert_eq!(icon, json!(["moderator", true]), "no muted icon for lee");
    assert_eq!(page_text(&lee, "my-mute").await, "🔇 the host muted you");
    assert_eq!(lee.script(&shown("self-unmute")).await, false, "lee may not lift a host's mute");
    let lift = host_page
        .wait_for(
            "return Boolean(document.querySelector('#stage [data-action=unmute][data-target=lee]'))",
            secs(5),
            |v| v == true,
        )
        .await;
    assert_eq!(lift, true, "the host's page offers no Unmute");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet = listen_ws(ws(addr, "/ws/town-hall?batch=5").await, secs(3)).await;
    assert!(quiet.seqs.len() > 100, "the program goes on: {} frames", quiet.seqs.len());
    let loud = loud_windows(quiet.tail(2.0));
    assert_eq!(loud, 0, "lee is still heard after the mute ({loud} loud 100 ms windows)");
    assert_eq!(lee.script("return window.townhall.rtc().speak").await, "connected");

    // The host moves lee to the audience: lee's page stops speaking and says why.
    host_page.click("stage [data-action=move_to_audience][data-target=lee]").await;
    let state = lee.wait_for(room, secs(10), |v| v["notice"] == "moved_to_audience").await;
    assert_eq!(state["notice"], "moved_to_audience", "{state}");
    assert_eq!(state["me"]["onStage"], false, "{state}");
    assert_eq!(state["me"]["canSpeak"], false, "{state}");
    let notice = page_text(&lee, "room-notice").await;
    assert!(notice.contains("moved you to the audience"), "{notice}");
    let rtc = lee.wait_for("return window.townhall.rtc()", secs(5), |v| v["speak"] == "idle").await;
    assert_eq!(rtc["speak"], "idle", "lee's page still speaks: {rtc}");
    assert_eq!(lee.script("return document.getElementById('speak').disabled").await, true);
    assert_eq!(lee.script(&shown("request-speak")).await, true, "no way back to the stage");

    host_page.close().await;
    lee.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_records_the_demo_and_the_page_plays_the_recording_back() {
    if browser_available().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("townhall-browser-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server =
        demo_server(townhall_server::Config { data_dir: dir.clone(), ..Default::default() }).await;
    let addr = server.addr();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/")).await;
    let token = json!(server.host_token());
    browser.script(&format!("localStorage.setItem('townhall.token', {token}); return true")).await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let visible = |id: &str| format!("return !document.getElementById('{id}').hidden");
    let shown = browser.wait_for(&visible("record"), Duration::from_secs(10), |v| v == true).await;
    assert_eq!(shown, true, "the host's page offers no Record button");
    assert_eq!(browser.script(&visible("rec-badge")).await, false);

    browser.click("record").await;
    let rec = browser.wait_for(&visible("rec-badge"), Duration::from_secs(10), |v| v == true).await;
    assert_eq!(rec, true, "no REC badge while recording");
    assert_eq!(space_view(addr, "demo").await["recording"], true);
    assert_eq!(browser.script(&visible("stop-record")).await, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.click("stop-record").await;
    let gone =
        browser.wait_for(&visible("rec-badge"), Duration::from_secs(10), |v| v == false).await;
    assert_eq!(gone, false, "the REC badge stays after stopping");

    // The space's Recordings section: title, date, duration, a player and a download link.
    let item = "document.querySelector('#space-recordings .recording')";
    let listed = browser
        .wait_for(
            &format!("return Boolean({item} && {item}.querySelector('audio'))"),
            Duration::from_secs(10),
            |v| v == true,
        )
        .await;
    assert_eq!(listed, true, "the recording is not listed with a player");
    let text = browser.script(&format!("return {item}.textContent")).await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("Townhall demo") && t.contains("0:0")),
        "{text}"
    );
    let audio = browser
        .script(&format!(
            "const a = {item}.querySelector('audio'); \
             return {{preload: a.preload, controls: a.controls, src: a.src, \
                      download: {item}.querySelector('a[download]').getAttribute('href')}}"
        ))
        .await;
    assert_eq!(
        (audio["preload"].as_str(), audio["controls"].as_bool()),
        (Some("none"), Some(true))
    );
    assert!(audio["src"].as_str().is_some_and(|s| s.contains("/recordings/demo-")), "{audio}");
    assert!(audio["download"].as_str().is_some_and(|s| s.contains("download=1")), "{audio}");
    // Chromium plays it: the file decodes, seeks (byte ranges) and has the right length.
    browser.script(&format!("{item}.querySelector('audio').play(); return true")).await;
    let played = browser
        .wait_above(
            &format!("return {item}.querySelector('audio').currentTime"),
            0.5,
            Duration::from_secs(10),
        )
        .await;
    assert!(played > 0.5, "the recording does not play in the page ({played} s)");
    let duration = browser.script(&format!("return {item}.querySelector('audio').duration")).await;
    let duration = duration.as_f64().unwrap_or(0.0);
    assert!((2.0..5.0).contains(&duration), "the page's player says {duration} s");
    browser.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// JS: whether the element `#id` is displayed as a person sees it (takes room on the page and
/// is not invisible), whatever its `hidden` attribute says.
fn displayed(id: &str) -> String {
    format!(
        "const e = document.getElementById('{id}'); \
         const r = e.getBoundingClientRect(); const s = getComputedStyle(e); \
         return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0"
    )
}

/// JS: the elements the page hides (`hidden`) that are displayed anyway (a CSS `display`
/// overriding the attribute), by id or tag.
const HIDDEN_BUT_SHOWN: &str = "return [...document.querySelectorAll('[hidden]')] \
     .filter((e) => e.getClientRects().length > 0) \
     .map((e) => e.id || e.tagName.toLowerCase())";

/// JS: who the stage lists, as `[identity, role badge, talking]`.
const STAGE: &str = "return [...document.querySelectorAll('#stage .member')].map((li) => \
     [li.dataset.identity, li.querySelector('.badge')?.textContent, li.classList.contains('talking')])";

/// JS: the computed ring (box shadow) around `identity`'s avatar on the stage.
fn ring(identity: &str) -> String {
    format!(
        "const a = document.querySelector('#stage [data-identity=\"{identity}\"] .avatar'); \
         return a ? getComputedStyle(a).boxShadow : null"
    )
}

/// The ring a talking speaker's avatar wears (`.member.talking .avatar` in style.css).
const TALKING_RING: &str = "rgb(34, 160, 107)";

/// JS: why the page scrolls sideways: `document` wider than the viewport, or the elements that
/// stick out of it (empty when it fits).
const TOO_WIDE: &str = "const d = document.documentElement; \
     if (d.scrollWidth > d.clientWidth || document.body.scrollWidth > d.clientWidth) \
         return [`scrollWidth ${d.scrollWidth} > clientWidth ${d.clientWidth}`]; \
     return [...document.querySelectorAll('body *')].filter((e) => { \
         const r = e.getBoundingClientRect(); \
         return r.width > 0 && (r.left < -0.5 || r.right > d.clientWidth + 0.5); \
     }).map((e) => e.id || e.className || e.tagName.toLowerCase())";

/// Where the tests leave files for a person to look at (the workspace's `target/`).
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// With `TOWNHALL_SCREENSHOTS_TO_DOCS=1`, copies a screenshot into `docs/` as `name` (the
/// README shows them; run the test with it set to refresh them).
fn keep_for_docs(shot: &std::path::Path, name: &str) {
    if std::env::var("TOWNHALL_SCREENSHOTS_TO_DOCS").is_ok_and(|v| v == "1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(name);
        std::fs::copy(shot, &docs).expect("copy the screenshot into docs/");
        eprintln!("screenshot for the docs: {}", docs.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_visitor_of_the_demo_sees_the_voice_on_stage_and_no_controls_it_cannot_use() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    // The room says who is heard, and the voice is on the stage.
    let room = space_view(addr, "demo/room").await;
    let bot = room["room"]["speakers"]
        .as_array()
        .and_then(|s| s.iter().find(|m| m["identity"] == "demo-bot"));
    assert_eq!(bot.map(|m| m["role"].clone()), Some(json!("speaker")), "{room}");

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let on_stage = |v: &Value| {
        v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot" && m[1] == "Speaker"))
    };
    let stage = browser.wait_for(STAGE, secs(10), on_stage).await;
    assert!(on_stage(&stage), "the stage does not list demo-bot as a speaker: {stage}");
    assert!(
        stage.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-host" && m[1] == "Host")),
        "{stage}"
    );

    // What an anonymous visitor sees: Listen, the stage, and how to take part.
    for id in ["listen", "room", "stage", "room-hint"] {
        assert_eq!(browser.script(&displayed(id)).await, true, "#{id} is not displayed");
    }
    // Not what it cannot use: no invitation, no request, no Speak, no reactions, no host tools.
    for id in [
        "invitation",
        "accept-invite",
        "decline-invite",
        "me-controls",
        "request-speak",
        "speak-controls",
        "speak",
        "reaction-bar",
        "moderation",
        "host-controls",
        "end-space",
        "record",
        "host-panel",
        "stop",
    ] {
        assert_eq!(browser.script(&displayed(id)).await, false, "#{id} is displayed");
    }
    let leaks = browser.script(HIDDEN_BUT_SHOWN).await;
    assert_eq!(leaks, json!([]), "hidden elements the page displays anyway");

    // The voice lights its ring on the stage (voice activity); the silent host's stays dark.
    let lit = |v: &Value| v.as_str().is_some_and(|s| s.contains(TALKING_RING));
    let bot_ring = browser.wait_for(&ring("demo-bot"), secs(15), lit).await;
    assert!(lit(&bot_ring), "demo-bot's talking ring never lit: {bot_ring}");
    assert_eq!(browser.script(&ring("demo-host")).await, "none", "the silent host has a ring");
    assert_eq!(browser.script(&displayed("stage")).await, true);
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_demo_shows_the_stage_and_listen_without_horizontal_scroll() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    let browser = Browser::start().await;
    browser.set_viewport(390, 844).await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let viewport = browser.script("return [window.innerWidth, window.innerHeight]").await;
    assert_eq!(viewport, json!([390, 844]), "not a phone's viewport");
    let on_stage = |v: &Value| v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot"));
    let stage = browser.wait_for(STAGE, secs(10), on_stage).await;
    assert!(on_stage(&stage), "no demo-bot on the stage: {stage}");

    // Listen and the stage are on the first screen, whole.
    let whole = |selector: &str| {
        format!(
            "const r = document.querySelector('{selector}').getBoundingClientRect(); \
             return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 \
                 && r.right <= window.innerWidth && r.bottom <= window.innerHeight"
        )
    };
    for selector in ["#listen", "#stage", "#stage [data-identity=\"demo-bot\"]"] {
        assert_eq!(browser.script(&whole(selector)).await, true, "{selector} is not in view");
    }
    // No horizontal scroll, and nothing sticks out to the right.
    let wide = browser.script(TOO_WIDE).await;
    assert_eq!(wide, json!([]), "horizontal scroll, or elements wider than the phone");

    // The voice's ring lights on the first screen; a person can look at the picture.
    let lit = |v: &Value| v.as_str().is_some_and(|s| s.contains(TALKING_RING));
    let bot_ring = browser.wait_for(&ring("demo-bot"), secs(15), lit).await;
    assert!(lit(&bot_ring), "demo-bot's talking ring never lit: {bot_ring}");
    let shot = target_dir().join("phone-demo.png");
    browser.screenshot(&shot).await;
    eprintln!("phone screenshot: {}", shot.display());
    keep_for_docs(&shot, "page-phone.png");

    // A thumb presses Listen (a real click: it would fail on a covered button) and it plays,
    // still without horizontal scroll.
    browser.click("listen").await;
    let state =
        browser.wait_for("return window.townhall.state()", secs(20), |v| v == "listening").await;
    assert_eq!(state, "listening");
    assert_eq!(browser.script(&whole("#stop")).await, true, "Stop is not in view");
    let wide = browser.script(TOO_WIDE).await;
    assert_eq!(wide, json!([]), "horizontal scroll while listening");
    let shot = target_dir().join("phone-demo-listening.png");
    browser.screenshot(&shot).await;
    eprintln!("phone screenshot: {}", shot.display());

    // The host's page on a phone (moderation buttons on every speaker, the host panel, the
    // host's controls) fits too.
    let token = json!(server.host_token());
    browser.script(&format!("localStorage.setItem('townhall.token', {token}); return true")).await;
    browser.goto(&format!("http://{addr}/")).await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let moderated = "return Boolean(document.querySelector('#stage [data-action=mute][data-target=\"demo-bot\"]')) \
         && !document.getElementById('host-controls').hidden";
    let ready = browser.wait_for(moderated, secs(10), |v| v == true).await;
    assert_eq!(ready, true, "the host's page shows no moderation on the stage");
    let wide = browser.script(TOO_WIDE).await;
    assert_eq!(wide, json!([]), "the host's page is wider than the phone");
    assert_eq!(browser.script(&whole("#listen")).await, true, "Listen is not in view for the host");
    // The picture shows the stage with its moderation buttons.
    browser.script("document.getElementById('room').scrollIntoView(); return true").await;
    let shot = target_dir().join("phone-demo-host.png");
    browser.screenshot(&shot).await;
    eprintln!("phone screenshot: {}", shot.display());
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_player_plays_the_demo_with_one_click() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/embed/demo")).await;
    assert_eq!(page_text(&browser, "title").await, "Townhall demo: a live space");
    assert_eq!(page_text(&browser, "state").await, "Live");
    assert_eq!(browser.script(&displayed("play")).await, true, "no play button to be seen");
    assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));
    let audio = "document.getElementById('audio')";
    assert_eq!(browser.script(&format!("return {audio}.paused")).await, true);

    browser.click("play").await;
    let time = format!("return {audio}.currentTime");
    let first = browser.wait_above(&time, 0.5, Duration::from_secs(20)).await;
    let state = browser
        .script(&format!(
            "return {{paused: {audio}.paused, src: {audio}.currentSrc, \
                      note: document.getElementById('note').textContent}}"
        ))
        .await;
    assert!(first > 0.5, "the player never played ({first} s, {state})");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = browser.script(&time).await.as_f64().unwrap_or(0.0);
    assert!(later > first + 0.5, "the audio does not advance: {first} s, then {later} s");
    assert_eq!(state["paused"], false);
    assert_eq!(state["src"], format!("http://{addr}/live/demo.opus"));
    assert_eq!(page_text(&browser, "play-label").await, "Pause");
    assert_eq!(browser.script(&displayed("play")).await, true, "the button went away");

    // Pause lets go of the live stream; play starts again at the live edge.
    browser.click("play").await;
    let paused = browser
        .wait_for(&format!("return {audio}.paused"), Duration::from_secs(5), |v| v == true)
        .await;
    assert_eq!(paused, true);
    assert_eq!(page_text(&browser, "play-label").await, "Play");

    // In Arabic (a page that embeds it asks with `?lang=`): its words, right to left.
    browser.goto(&format!("http://{addr}/embed/demo?lang=ar")).await;
    let state = browser
        .wait_for(
            "return document.getElementById('state').textContent",
            Duration::from_secs(5),
            |v| v == "مباشر",
        )
        .await;
    assert_eq!(state, "مباشر", "the state is not said in Arabic");
    assert_eq!(page_text(&browser, "play-label").await, "تشغيل");
    assert_eq!(browser.script("return document.documentElement.dir").await, "rtl");
    assert_eq!(browser.script(&displayed("play")).await, true, "no play button to be seen");
    browser.click("play").await;
    let label = browser
        .wait_for(
            "return document.getElementById('play-label').textContent",
            Duration::from_secs(20),
            |v| v == "إيقاف مؤقت",
        )
        .await;
    assert_eq!(label, "إيقاف مؤقت", "playing, the button does not say pause in Arabic");
    browser.close().await;
    server.shutdown().await;
}

/// The fake captions worker (same words for every phrase): delivery, not recognition, is
/// tested here (`tests/captions.rs` runs the real engine).
fn fake_captions_engine() -> String {
    format!("python3 {}/tests/fake_captions_worker.py", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_captions_under_the_stage_and_a_transcript() {
    if browser_available().is_none() {
        return;
    }
    let server = server_with(townhall_server::Config {
        captions: true,
        captions_engine: fake_captions_engine(),
        ..townhall_server::Config::default()
    })
    .await;
    let addr: SocketAddr = server.addr();
    live_space(addr, "cc-page").await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/cc-page")).await;
    let secs = Duration::from_secs;
    browser.wait_for("return window.townhall.space()", secs(15), |v| v == "cc-page").await;
    browser.wait_for(&displayed("listen"), secs(15), |v| v == true).await;
    browser.click("listen").await;
    // Wait until the engine is ready (the captions card says so), then speak.
    let ready = "return document.getElementById('cc-engine').textContent.includes('fake') ? 1 : 0";
    browser.wait_above(ready, 0.5, Duration::from_secs(20)).await;
    let speaker = spawn_speaker(addr, "cc-page", "alice", 440.0, Duration::from_secs(2));
    let line = "return document.getElementById('caption-line').textContent.includes('hello from phrase') ? 1 : 0";
    let shown = browser.wait_above(line, 0.5, Duration::from_secs(20)).await;
    let text = page_text(&browser, "caption-line").await;
    assert!(shown > 0.5, "the caption line shows the final: {text:?}");
    assert!(text.starts_with("alice: "), "with the speaker's name: {text:?}");
    let panel = page_text(&browser, "transcript").await;
    assert!(panel.contains("alice: hello from phrase"), "the transcript panel: {panel:?}");
    // The CC toggle hides the line.
    browser.click("cc-toggle").await;
    let hidden = browser.script("return document.getElementById('caption-line').hidden").await;
    assert_eq!(hidden, Value::Bool(true));
    speaker.await.expect("speaker");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_shows_the_webvtt_caption_track() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config {
        captions: true,
        captions_engine: fake_captions_engine(),
        ..townhall_server::Config::default()
    })
    .await;
    let addr = server.addr();
    let res = http()
        .put(format!("http://{addr}/api/v1/admin/shield"))
        .bearer_auth(server.host_token())
        .json(&json!({ "prefer_hls": true }))
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    // The page has its words and the space before Listen is pressed (a click on a page still
    // loading is lost on a busy machine).
    let secs = Duration::from_secs;
    browser.wait_for("return window.townhall.space()", secs(15), |v| v == "demo").await;
    browser.wait_for(&displayed("listen"), secs(15), |v| v == true).await;
    browser.click("listen").await;
    // hls.js reads the multivariant playlist's subtitle rendition and puts its WebVTT cues on
    // the media element's text track; the demo bot talks, the fake engine names each phrase.
    let cues = "const a = document.getElementById('fallback-audio');
        const t = [...a.textTracks].find((t) => t.kind === 'subtitles' || t.kind === 'captions');
        if (!t) return 0;
        if (t.mode === 'disabled') t.mode = 'hidden';
        return [...(t.cues || [])].filter((c) => c.text.includes('hello from phrase')).length";
    let found = browser.wait_above(cues, 0.5, Duration::from_secs(40)).await;
    let detail = browser
        .script(
            "const a = document.getElementById('fallback-audio');
             return JSON.stringify({now: a.currentTime, tracks: [...a.textTracks].map((t) =>
               ({kind: t.kind, label: t.label, mode: t.mode,
                 cues: [...(t.cues || [])].map((c) => [c.startTime, c.endTime, c.text])}))})",
        )
        .await;
    eprintln!("caption track: {detail}");
    assert!(found >= 1.0, "a caption track with the engine's words: {detail}");
    // Cues sit on the audio's timeline (X-TIMESTAMP-MAP): near what is playing, not at 0 or
    // hours away.
    let parsed: Value = serde_json::from_str(detail.as_str().unwrap_or("{}")).expect("json");
    let now = parsed["now"].as_f64().unwrap_or(0.0);
    let starts: Vec<f64> = parsed["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["cues"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c[0].as_f64())
        .collect();
    assert!(
        starts.iter().any(|s| (s - now).abs() < 30.0),
        "cue times near the playing position {now}: {detail}"
    );
    browser.close().await;
    server.shutdown().await;
}

/// In a cluster, a host's page served by an edge speaks over WHIP to the space's origin (an
/// edge takes no speakers); when that origin is killed, the page follows the space to the
/// standby origin that took it over, and a listener on the edge hears the page's microphone
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_speakers_page_follows_the_space_to_the_standby_origin() {
    use townhall_server::config::NodeRole;
    if browser_available().is_none() {
        return;
    }
    let secs = Duration::from_secs;
    let redis = common::nodes::RedisServer::start().await;
    let origin = common::nodes::NodeProcess::start("origin", &redis.url(), "origin-page");
    let data_dir = std::env::temp_dir().join(format!(
        "townhall-browser-standby-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let cluster = |role| townhall_server::Config {
        role,
        redis: Some(redis.url()),
        data_dir: data_dir.clone(),
        ..townhall_server::Config::default()
    };
    let standby = server_with(cluster(NodeRole::Origin)).await;
    let edge = server_with(cluster(NodeRole::Edge)).await;
    live_space(origin.addr, "moving").await;
    let deadline = tokio::time::Instant::now() + secs(10);
    while space_view(edge.addr(), "moving").await["state"] != "live" {
        assert!(tokio::time::Instant::now() < deadline, "the edge never carried the space");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The host opens the space on the edge and speaks: over WHIP, at the origin.
    let page = Browser::start().await;
    page.goto(&format!("http://{}/", edge.addr())).await;
    let token = json!(host());
    page.script(&format!("localStorage.setItem('townhall.token', {token}); return true")).await;
    page.goto(&format!("http://{}/#/space/moving", edge.addr())).await;
    let controls = page.wait_for(&displayed("host-controls"), secs(10), |v| v == true).await;
    assert_eq!(controls, true, "no host controls on the edge's page");
    page.click("speak").await;
    let at = |addr: SocketAddr| {
        format!(
            "const r = window.townhall.rtc(); const l = window.townhall.rtcLocation('speak') || ''; \
             return r.speak === 'connected' && r.speakMode === 'webrtc' && l.startsWith('http://{addr}/whip/moving/')"
        )
    };
    let on_origin = page.wait_for(&at(origin.addr), secs(20), |v| v == true).await;
    let why = page.script("return [window.townhall.rtc(), window.townhall.state()]").await;
    assert_eq!(on_origin, true, "the page did not publish at the origin: {why}");
    let heard = listen_ws(ws(edge.addr(), "/ws/moving").await, secs(4)).await;
    assert!(loud_windows(&heard.pcm) >= 3, "the edge's listener did not hear the page");

    // The origin dies; the standby takes the space; the page publishes there.
    origin.signal("KILL");
    let on_standby = page.wait_for(&at(standby.addr()), secs(45), |v| v == true).await;
    let why = page.script("return [window.townhall.rtc(), window.townhall.state()]").await;
    assert_eq!(on_standby, true, "the page did not follow the space to the standby: {why}");
    let heard = listen_ws(ws(edge.addr(), "/ws/moving").await, secs(4)).await;
    assert!(loud_windows(&heard.pcm) >= 3, "silent on the edge after the failover");
    page.close().await;
    edge.shutdown().await;
    standby.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// In a cluster, a page listening over WebRTC goes through the door (its node, the origin here)
/// to an edge; when that edge is killed, the page goes back through the door with its ticket,
/// is sent to the other edge and hears the speaker again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_whep_page_whose_edge_dies_listens_on_the_other() {
    use townhall_server::config::NodeRole;
    if browser_available().is_none() {
        return;
    }
    let secs = Duration::from_secs;
    let redis = common::nodes::RedisServer::start().await;
    let data_dir = std::env::temp_dir().join(format!(
        "townhall-browser-door-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let origin = server_with(townhall_server::Config {
        role: NodeRole::Origin,
        redis: Some(redis.url()),
        data_dir: data_dir.clone(),
        ..townhall_server::Config::default()
    })
    .await;
    let edges = [
        common::nodes::NodeProcess::start("edge", &redis.url(), "edge-page-1"),
        common::nodes::NodeProcess::start("edge", &redis.url(), "edge-page-2"),
    ];
    live_space(origin.addr(), "doorway").await;
    for edge in &edges {
        let deadline = tokio::time::Instant::now() + secs(10);
        while space_view(edge.addr, "doorway").await["state"] != "live" {
            assert!(tokio::time::Instant::now() < deadline, "an edge never carried the space");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Edges are offered once the door has heard from them (a heartbeat or two).
    tokio::time::sleep(secs(3)).await;
    let speaker = spawn_speaker(origin.addr(), "doorway", "alice", 440.0, secs(60));

    let page = Browser::start().await;
    page.goto(&format!("http://{}/#/space/doorway", origin.addr())).await;
    let shown = page.wait_for("return window.townhall.space()", secs(5), |v| v == "doorway").await;
    assert_eq!(shown, "doorway");
    // Every join the page makes, with the node it names as lost (`avoid`).
    page.script(
        "window.avoided = []; const f = window.fetch; \
         window.fetch = (u, o) => { \
           const url = new URL(String(u), location.href); \
           if (url.pathname.endsWith('/join')) window.avoided.push(url.searchParams.get('avoid')); \
           return f(u, o); };",
    )
    .await;
    page.click("listen-rtc").await;
    let on_edge = "const l = window.townhall.rtcLocation('listen') || ''; \
                   return window.townhall.rtc().listen === 'connected' ? l : ''";
    let first = page.wait_for(on_edge, secs(20), |v| v != "").await;
    let why = page.script("return window.townhall.state()").await;
    let first = first.as_str().unwrap_or_default().to_owned();
    let doomed = edges.iter().position(|e| first.starts_with(&format!("http://{}/whep/", e.addr)));
    let Some(doomed) = doomed else { panic!("the door sent the page to no edge: {first} ({why})") };
    let loud = "return window.townhall.heard().loud";
    let heard = page.wait_for(loud, secs(10), |v| v.as_u64() >= Some(5)).await;
    assert!(heard.as_u64() >= Some(5), "the page heard nothing on the edge: {heard}");

    let avoided = "return window.avoided";
    let joins_before = page.script(avoided).await.as_array().map_or(0, Vec::len);
    edges[doomed].signal("KILL");
    let other = edges[1 - doomed].addr;
    let moved = page
        .wait_for(on_edge, secs(40), |v| {
            v.as_str().is_some_and(|l| l.starts_with(&format!("http://{other}/whep/")))
        })
        .await;
    let why = page.script("return window.townhall.state()").await;
    assert!(
        moved.as_str().is_some_and(|l| l.starts_with(&format!("http://{other}/whep/"))),
        "the page did not come back on the other edge: {moved} ({why})"
    );
    // Its first join after the kill named the edge it lost, so the door could not send it back
    // there (a dead edge stays in the door's list for a round or two).
    let avoided = page.script(avoided).await;
    let dead = edges[doomed].addr;
    let first_after = avoided.as_array().and_then(|a| a.get(joins_before)).cloned();
    assert!(
        first_after
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(&format!("http://{dead}"))),
        "the first join after the kill did not name the lost edge {dead}: {avoided} (from {joins_before})"
    );
    let before = page.script(loud).await.as_u64().unwrap_or(0);
    let after = page.wait_for(loud, secs(10), |v| v.as_u64() >= Some(before + 5)).await;
    assert!(after.as_u64() >= Some(before + 5), "silent on the other edge: {before} → {after}");
    speaker.abort();
    page.close().await;
    origin.shutdown().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_page_speaks_from_the_microphone_over_whip() {
    if browser_available().is_none() {
        return;
    }
    let ca = common::tls::TestCa::new("browser");
    let server = server_with(townhall_server::Config {
        tls: townhall_server::config::TlsMode::Files,
        tls_cert: Some(ca.cert.clone()),
        tls_key: Some(ca.key.clone()),
        ..Default::default()
    })
    .await;
    let addr = server.addr();
    let base = format!("https://127.0.0.1:{}", addr.port());
    let res = ca
        .http()
        .post(format!("{base}/api/v1/spaces"))
        .bearer_auth(host())
        .json(&json!({ "id": "secure-stage", "title": "Secure stage", "live": true }))
        .send()
        .await
        .expect("create over TLS");
    assert_eq!(res.status(), 201);
    // Chromium trusts the test certificate's key (as it would a CA-issued one): no warning
    // page, a secure context, the microphone allowed.
    let browser =
        Browser::start_with(&[format!("--ignore-certificate-errors-spki-list={}", ca.spki_sha256)])
            .await;
    browser.goto(&format!("{base}/")).await;
    let secure = browser.script("return [location.protocol, window.isSecureContext]").await;
    assert_eq!(secure, json!(["https:", true]), "the page did not load over HTTPS");
    let token = json!(server.host_token());
    browser.script(&format!("localStorage.setItem('townhall.token', {token}); return true")).await;
    browser.goto(&format!("{base}/#/space/secure-stage")).await;
    let secs = Duration::from_secs;
    let shown =
        browser.wait_for("return window.townhall.space()", secs(5), |v| v == "secure-stage").await;
    assert_eq!(shown, "secure-stage", "the page did not show the space");
    // A Rust listener over wss hears what the page sends over WHIP.
    let listener = ca.wss(addr, "/ws/secure-stage?batch=5").await;
    let listening = tokio::spawn(listen_ws(listener, secs(15)));
    browser.click("speak").await;
    let state = browser
        .wait_for("return window.townhall.rtc()", secs(15), |v| v["speak"] == "connected")
        .await;
    assert_eq!(state["speakMode"], "webrtc", "not speaking over WHIP: {state}");
    let heard = listening.await.expect("listener");
    let loud = heard.pcm.chunks(4_800).filter(|c| rms(c) > 0.01).count();
    assert!(loud >= 5, "the wss listener heard the page in only {loud} 100 ms windows");
    browser.close().await;
    server.shutdown().await;
}

/// JS: the loudest RMS an analyser on the `<audio>` element `#id` has heard since
/// [`LISTEN_TO_AUDIO`] hooked it (what a person hears from it, not what it says it plays).
fn heard_from(id: &str) -> String {
    format!(
        "const a = document.getElementById('{id}'); const b = new Float32Array(2048); \
         a._analyser.getFloatTimeDomainData(b); \
         const rms = Math.sqrt(b.reduce((s, x) => s + x * x, 0) / b.length); \
         a._loudest = Math.max(a._loudest || 0, rms); return a._loudest"
    )
}

/// JS: routes the `<audio>` element `#id` through an analyser (and on to the speakers), then
/// plays it.
fn listen_to_audio(id: &str) -> String {
    format!(
        "const a = document.getElementById('{id}'); const ctx = new AudioContext(); \
         const an = ctx.createAnalyser(); an.fftSize = 2048; \
         ctx.createMediaElementSource(a).connect(an); an.connect(ctx.destination); \
         a._analyser = an; ctx.resume(); a.play(); return true"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_clips_the_demo_from_the_live_page_and_the_clip_page_plays_it() {
    if browser_available().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("townhall-browser-clip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server =
        demo_server(townhall_server::Config { data_dir: dir.clone(), ..Default::default() }).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    tokio::time::sleep(secs(4)).await;
    let browser = Browser::start().await;
    // An anonymous visitor: no token pasted.
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let shown = browser.wait_for(&displayed("clip"), secs(10), |v| v == true).await;
    assert_eq!(shown, true, "no Clip button on the live page");
    assert_eq!(browser.script(&displayed("clip-link")).await, false);
    browser.click("clip").await;
    let linked = browser.wait_for(&displayed("clip-link"), secs(15), |v| v == true).await;
    let status = page_text(&browser, "clip-status").await;
    assert_eq!(linked, true, "no link to the clip: {status}");
    assert!(status.starts_with("Clip ready"), "{status}");
    let href = browser.script("return document.getElementById('clip-link').href").await;
    let href = href.as_str().expect("a link").to_owned();
    assert!(href.starts_with(&format!("http://{addr}/clips/")), "{href}");
    assert_eq!(page_text(&browser, "clip-link").await, href, "the link shows where it goes");
    assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));

    // The clip's own page: its title, a player, and the demo's voice when it plays.
    browser.goto(&href).await;
    assert_eq!(page_text(&browser, "clip-title").await, "Townhall demo: a live space");
    for id in ["clip-title", "clip-audio", "clip-download", "clip-space"] {
        assert_eq!(browser.script(&displayed(id)).await, true, "#{id} is not displayed");
    }
    browser.script(&listen_to_audio("clip-audio")).await;
    let time = "return document.getElementById('clip-audio').currentTime";
    let played = browser.wait_above(time, 1.0, secs(15)).await;
    assert!(played > 1.0, "the clip does not play ({played} s)");
    let loudest = browser.wait_above(&heard_from("clip-audio"), 0.02, secs(10)).await;
    assert!(loudest > 0.02, "nothing heard from the clip (RMS {loudest})");
    let duration = browser.script("return document.getElementById('clip-audio').duration").await;
    let duration = duration.as_f64().unwrap_or(0.0);
    assert!((3.0..=31.0).contains(&duration), "the player says the clip is {duration} s");
    assert_eq!(page_text(&browser, "clip-source").await, "live");

    // The same page in Arabic: its words and where the clip comes from, right to left.
    let sep = if href.contains('?') { '&' } else { '?' };
    browser.goto(&format!("{href}{sep}lang=ar")).await;
    let download = browser
        .wait_for("return document.getElementById('clip-download').textContent", secs(5), |v| {
            v == "تنزيل (Ogg/Opus)"
        })
        .await;
    assert_eq!(download, "تنزيل (Ogg/Opus)", "the download link is not in Arabic");
    assert_eq!(page_text(&browser, "clip-source").await, "مباشر");
    assert_eq!(browser.script("return document.documentElement.dir").await, "rtl");
    for id in ["clip-title", "clip-audio", "clip-download"] {
        assert_eq!(browser.script(&displayed(id)).await, true, "#{id} is not displayed in Arabic");
    }
    browser.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_page_shows_who_spoke_when_jumps_to_a_turn_and_changes_speed() {
    if browser_available().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("townhall-browser-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server =
        demo_server(townhall_server::Config { data_dir: dir.clone(), ..Default::default() }).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    // Recorded: the demo's voice, and alice's tone for three seconds in the middle.
    let http = reqwest::Client::new();
    let record = |on: bool| {
        http.post(format!("http://{addr}/api/v1/spaces/demo/recording"))
            .bearer_auth(server.host_token())
            .json(&json!({ "recording": on }))
            .send()
    };
    let started: Value = record(true).await.expect("record").json().await.expect("json");
    let id = started["id"].as_str().expect("a recording").to_owned();
    tokio::time::sleep(secs(3)).await;
    let alice = spawn_speaker(addr, "demo", "alice", 440.0, secs(3));
    alice.await.expect("alice");
    tokio::time::sleep(secs(3)).await;
    assert_eq!(record(false).await.expect("stop").status(), 200);
    let rec: Value = http
        .get(format!("http://{addr}/api/v1/recordings/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let turns = rec["turns"].as_array().expect("turns").clone();
    let speakers = rec["speakers"].as_array().expect("speakers").clone();
    assert!(speakers.contains(&json!("demo-bot")) && speakers.contains(&json!("alice")), "{rec}");
    let (alice_at, alice_turn) = turns
        .iter()
        .enumerate()
        .find(|(_, t)| t["speaker"] == "alice")
        .map(|(i, t)| (i, t.clone()))
        .expect("a turn of alice's");
    let start = alice_turn["start_ms"].as_f64().expect("start") / 1_000.0;
    assert!(start > 2.0, "alice started about 3 s in: {alice_turn}");

    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/recording/{id}")).await;
    let drawn = browser.wait_for(&displayed("timeline"), secs(10), |v| v == true).await;
    assert_eq!(drawn, true, "no timeline to be seen");
    assert_eq!(page_text(&browser, "replay-title").await, "Townhall demo: a live space");
    // A row per speaker, each name and each bar displayed (computed style and size).
    let rows = browser
        .script(
            "const shown = (e) => { const r = e.getBoundingClientRect(); const s = getComputedStyle(e); \
                 return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0; }; \
             return [...document.querySelectorAll('#timeline .tl-row[data-speaker]')].map((row) => ({ \
                 name: row.querySelector('.tl-name').textContent, \
                 nameShown: shown(row.querySelector('.tl-name')), \
                 bars: [...row.querySelectorAll('.tl-turn')].filter(shown).length }))",
        )
        .await;
    let rows = rows.as_array().expect("rows").clone();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names.len(), speakers.len(), "{rows:?}");
    for who in ["demo-bot", "alice"] {
        let row =
            rows.iter().find(|r| r["name"] == who).unwrap_or_else(|| panic!("no row for {who}"));
        assert_eq!(row["nameShown"], true, "{who}'s name is not displayed");
        assert!(row["bars"].as_u64().unwrap_or(0) >= 1, "no turn of {who}'s displayed: {row}");
    }
    for id in ["replay-audio", "replay-speeds", "speed-1", "speed-1_5", "replay-clip"] {
        assert_eq!(browser.script(&displayed(id)).await, true, "#{id} is not displayed");
    }
    assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));
    let audio = "document.getElementById('replay-audio')";
    assert_eq!(browser.script(&format!("return {audio}.currentTime")).await, 0);

    // A click on alice's turn: the player is there, and plays.
    browser.click(&format!("turn-{alice_at}")).await;
    let at = browser
        .wait_for(&format!("return {audio}.currentTime"), secs(10), |v| {
            v.as_f64().is_some_and(|t| t >= start - 0.05)
        })
        .await
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        (start - 0.05..start + 2.0).contains(&at),
        "clicked {start} s, the player is at {at} s"
    );
    let playing =
        browser.wait_for(&format!("return !{audio}.paused"), secs(5), |v| v == true).await;
    assert_eq!(playing, true, "the turn does not play");

    // Speed: 1.5x, and the player runs faster than the clock.
    assert_eq!(browser.script(&format!("return {audio}.playbackRate")).await, 1);
    browser.click("speed-1_5").await;
    assert_eq!(browser.script(&format!("return {audio}.playbackRate")).await, 1.5);
    let pressed = browser
        .script(
            "return [...document.querySelectorAll('#replay-speeds button')] \
             .map((b) => [b.textContent, b.getAttribute('aria-pressed')])",
        )
        .await;
    assert_eq!(
        pressed,
        json!([["1×", "false"], ["1.25×", "false"], ["1.5×", "true"], ["2×", "false"]])
    );
    browser.click(&format!("turn-{alice_at}")).await;
    let t0 = browser.script(&format!("return {audio}.currentTime")).await.as_f64().unwrap_or(0.0);
    let wall = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let t1 = browser.script(&format!("return {audio}.currentTime")).await.as_f64().unwrap_or(0.0);
    let ratio = (t1 - t0) / wall.elapsed().as_secs_f64();
    assert!(
        ratio > 1.2,
        "at 1.5x the player moved {:.2} s in {:.2} s",
        t1 - t0,
        wall.elapsed().as_secs_f64()
    );
    // For a person to look at: the replay page as drawn.
    browser.screenshot(&target_dir().join("screenshots").join("replay.png")).await;
    browser.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// JS: starts painting the SVG `#id`, with the styles the page computed for each of its parts,
/// into a canvas; `window.painted[id]` becomes the count of its pixels that are not transparent
/// and of those in the accent (peak line), amber (reaction bars) and green (retention) colours.
fn paint_svg(id: &str) -> String {
    format!(
        "const svg = document.getElementById('{id}'); const clone = svg.cloneNode(true); \
         const src = [svg, ...svg.querySelectorAll('*')]; const dst = [clone, ...clone.querySelectorAll('*')]; \
         src.forEach((e, i) => {{ const s = getComputedStyle(e); \
             for (const p of ['fill', 'stroke', 'stroke-width', 'font-size', 'opacity', 'display']) \
                 dst[i].style.setProperty(p, s.getPropertyValue(p)); }}); \
         const r = svg.getBoundingClientRect(); \
         clone.setAttribute('xmlns', 'http://www.w3.org/2000/svg'); \
         clone.setAttribute('width', r.width); clone.setAttribute('height', r.height); \
         window.painted = window.painted || {{}}; window.painted['{id}'] = null; \
         const img = new Image(); \
         img.onload = () => {{ const c = document.createElement('canvas'); \
             c.width = Math.ceil(r.width); c.height = Math.ceil(r.height); \
             const g = c.getContext('2d'); g.drawImage(img, 0, 0); \
             const d = g.getImageData(0, 0, c.width, c.height).data; \
             const near = (i, rgb) => Math.abs(d[i] - rgb[0]) < 40 && Math.abs(d[i + 1] - rgb[1]) < 40 \
                 && Math.abs(d[i + 2] - rgb[2]) < 40 && d[i + 3] > 200; \
             const n = {{ any: 0, accent: 0, amber: 0, green: 0 }}; \
             for (let i = 0; i < d.length; i += 4) {{ if (d[i + 3] > 0) n.any++; \
                 if (near(i, [79, 70, 229])) n.accent++; if (near(i, [245, 158, 11])) n.amber++; \
                 if (near(i, [21, 128, 61])) n.green++; }} \
             window.painted['{id}'] = n; }}; \
         img.onerror = () => {{ window.painted['{id}'] = {{ error: true }}; }}; \
         img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(new XMLSerializer().serializeToString(clone)); \
         return true"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_opens_the_stats_panel_and_sees_the_audience_drawn_and_others_do_not_see_it() {
    if browser_available().is_none() {
        return;
    }
    // One-second buckets, so that a few seconds of audience make a picture with a shape.
    let config = townhall_server::Config { stats_bucket_secs: 1, ..Default::default() };
    let server = server_with(config).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    let http = reqwest::Client::new();
    let hana = token("hana", Role::Host, "panel");
    let res = http
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(&hana)
        .json(&json!({ "id": "panel", "title": "Stats on the page", "live": true }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    // An audience arriving one by one (a second apart: the shape of the picture, not a check):
    // three WebSocket listeners and an Ogg one, reactions and a raised hand.
    let ticket = |who: &str| token(who, Role::Listener, "panel");
    let mut audience = Vec::new();
    for who in ["ann", "bob", "cy"] {
        audience.push(ws(addr, &format!("/ws/panel?token={}", ticket(who))).await);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let mut ogg = http
        .get(format!("http://{addr}/live/panel.opus?token={}", ticket("dee")))
        .send()
        .await
        .expect("ogg");
    assert!(ogg.chunk().await.expect("ogg bytes").is_some());
    let act = |who: &str, body: Value| {
        http.post(format!("http://{addr}/api/v1/spaces/panel/actions"))
            .bearer_auth(ticket(who))
            .json(&body)
            .send()
    };
    for who in ["ann", "ann", "bob"] {
        let res = act(who, json!({"action": "react", "reaction": "👏"})).await.expect("react");
        assert_eq!(res.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let res = act("cy", json!({"action": "react", "reaction": "🔥"})).await.expect("react");
    assert_eq!(res.status(), 200);
    let res = act("cy", json!({"action": "request_to_speak"})).await.expect("hand");
    assert_eq!(res.status(), 200);
    // ann leaves; the line steps down.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    drop(audience.remove(0));
    // The reactions are tallied each second: wait until the API counts them.
    let deadline = tokio::time::Instant::now() + secs(10);
    loop {
        let s: Value = http
            .get(format!("http://{addr}/api/v1/spaces/panel/stats"))
            .bearer_auth(&hana)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        let done = s["reactions"]["total"] == 4 && s["listeners"]["now"] == 3;
        if done || tokio::time::Instant::now() > deadline {
            assert_eq!(s["reactions"]["total"], 4, "{s}");
            assert_eq!(s["listeners"]["now"], 3, "{s}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The host's page: the panel is offered, closed; opened, it draws.
    let browser = Browser::start().await;
    browser.set_viewport(900, 1000).await;
    browser.goto(&format!("http://{addr}/")).await;
    let host_token = json!(hana);
    browser
        .script(&format!("localStorage.setItem('townhall.token', {host_token}); return true"))
        .await;
    browser.goto(&format!("http://{addr}/#/space/panel")).await;
    let offered = browser.wait_for(&displayed("stats-card"), secs(10), |v| v == true).await;
    assert_eq!(offered, true, "the host is not offered the stats panel");
    assert_eq!(browser.script(&displayed("stats-chart")).await, false, "open before asked");
    browser.click("stats-toggle").await;
    let drawn = "const p = document.getElementById('stats-peak-line'); \
                 return p ? p.getTotalLength() : 0";
    let length = browser.wait_for(drawn, secs(10), |v| v.as_f64().unwrap_or(0.0) > 0.0).await;
    assert!(length.as_f64().unwrap_or(0.0) > 0.0, "no listeners line drawn: {length}");
    for id in ["stats-body", "stats-chart", "stats-retention", "stats-numbers", "stats-joins"] {
        assert_eq!(browser.script(&displayed(id)).await, true, "#{id} is not displayed");
    }
    // What the SVG holds, as rendered: sizes on the page, not attributes.
    let shapes = browser
        .script(
            "const box = (id) => { const e = document.getElementById(id); \
                 if (!e) return null; const b = e.getBBox(); const r = e.getBoundingClientRect(); \
                 return { w: b.width, h: b.height, pw: r.width, ph: r.height, d: e.getAttribute('d') || '' }; }; \
             const bars = [...document.querySelectorAll('#stats-chart .stats-bar')] \
                 .map((b) => b.getBoundingClientRect()).filter((r) => r.width > 0 && r.height > 0).length; \
             const chart = document.getElementById('stats-chart').getBoundingClientRect(); \
             return { peak: box('stats-peak-line'), average: box('stats-average-area'), \
                 retention: box('stats-retention-line'), bars, chart: [chart.width, chart.height], \
                 numbers: [...document.querySelectorAll('#stats-numbers div')] \
                     .map((d) => [d.querySelector('dt').textContent, d.querySelector('dd').textContent]), \
                 joins: document.getElementById('stats-joins').textContent }",
        )
        .await;
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    assert!(f(&shapes["chart"][0]) > 300.0 && f(&shapes["chart"][1]) > 80.0, "{shapes}");
    assert!(f(&shapes["peak"]["pw"]) > 200.0, "the peak line spans the chart: {shapes}");
    assert!(f(&shapes["peak"]["ph"]) > 20.0, "the line rises with the audience: {shapes}");
    assert!(f(&shapes["average"]["h"]) > 10.0, "the average area has height: {shapes}");
    assert!(f(&shapes["bars"]) >= 2.0, "reaction bars in two seconds: {shapes}");
    assert!(f(&shapes["retention"]["pw"]) > 200.0, "the retention curve is drawn: {shapes}");
    let numbers = shapes["numbers"].as_array().expect("numbers").clone();
    let number = |label: &str| {
        numbers.iter().find(|n| n[0] == label).map(|n| n[1].clone()).unwrap_or(Value::Null)
    };
    assert_eq!(number("peak listeners"), "4", "{shapes}");
    assert_eq!(number("unique listeners"), "4");
    assert_eq!(number("reactions"), "4");
    assert_eq!(number("requests to speak"), "1");
    let joins = shapes["joins"].as_str().unwrap_or("");
    assert!(joins.contains("WebSocket 3") && joins.contains("Ogg 1"), "{joins}");
    // Pixels: the pictures, painted with the page's styles, put colour where the data is.
    for id in ["stats-chart", "stats-retention"] {
        browser.script(&paint_svg(id)).await;
    }
    let painted = browser
        .wait_for("return window.painted", secs(10), |v| {
            !v["stats-chart"].is_null() && !v["stats-retention"].is_null()
        })
        .await;
    assert!(f(&painted["stats-chart"]["accent"]) > 100.0, "peak line pixels: {painted}");
    assert!(f(&painted["stats-chart"]["amber"]) > 10.0, "reaction bar pixels: {painted}");
    assert!(f(&painted["stats-retention"]["green"]) > 100.0, "retention pixels: {painted}");
    assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));
    browser.script("document.getElementById('stats-card').scrollIntoView(); return true").await;
    let shot = target_dir().join("screenshots").join("stats.png");
    browser.screenshot(&shot).await;
    eprintln!("stats screenshot: {}", shot.display());

    // A listener's page and an anonymous visitor's: no panel.
    let listener = json!(ticket("bob"));
    for setup in [
        format!("localStorage.setItem('townhall.token', {listener}); return true"),
        "localStorage.removeItem('townhall.token'); return true".to_owned(),
    ] {
        browser.goto(&format!("http://{addr}/")).await;
        browser.script(&setup).await;
        browser.goto(&format!("http://{addr}/#/space/panel")).await;
        let room = browser.wait_for(&displayed("room"), secs(10), |v| v == true).await;
        assert_eq!(room, true, "the space page did not open");
        assert_eq!(browser.script(&displayed("stats-card")).await, false, "{setup}");
        assert_eq!(browser.script(&displayed("stats-toggle")).await, false, "{setup}");
        assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));
    }
    drop(audience);
    browser.close().await;
    server.shutdown().await;
}

/// JS: the text `#id` shows (`innerText`: what is rendered, not what the markup holds).
fn shown_text(id: &str) -> String {
    format!("const e = document.getElementById('{id}'); return e ? e.innerText.trim() : null")
}

/// JS: the horizontal middle of `selector`'s box, as a share of its container `within`'s width
/// (0 at its left edge, 1 at its right).
fn across(selector: &str, within: &str) -> String {
    format!(
        "const e = document.querySelector('{selector}').getBoundingClientRect(); \
         const c = document.querySelector('{within}').getBoundingClientRect(); \
         return ((e.left + e.right) / 2 - c.left) / c.width"
    )
}

/// Whether a string is written in Arabic letters.
fn arabic(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.chars().any(|c| ('\u{0600}'..='\u{06FF}').contains(&c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_in_arabic_gets_the_demo_in_arabic_right_to_left_and_can_switch_to_english() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    // Chromium set to Arabic, as an Arabic-speaking visitor's browser is: nothing in the address
    // asks for it.
    let browser =
        Browser::start_with(&["--lang=ar".to_owned(), "--accept-lang=ar".to_owned()]).await;
    browser.set_viewport(1000, 900).await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let languages = browser.script("return navigator.languages").await;
    assert_eq!(languages[0].as_str().map(|l| l.starts_with("ar")), Some(true), "{languages}");

    // What the visitor reads: Arabic, the Listen button first.
    let listen = browser.wait_for(&shown_text("listen"), secs(10), |v| v == "استمع").await;
    assert_eq!(listen, "استمع", "the Listen button does not read in Arabic");
    let on_stage = |v: &Value| v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot"));
    let stage = browser.wait_for(STAGE, secs(10), on_stage).await;
    let bot = stage.as_array().and_then(|s| s.iter().find(|m| m[0] == "demo-bot")).cloned();
    assert_eq!(bot.map(|m| m[1].clone()), Some(json!("متحدث")), "the role badge: {stage}");
    for id in ["listen-rtc", "listener-count", "stage-count", "room-hint", "listen-state"] {
        let text = browser.script(&shown_text(id)).await;
        assert!(arabic(&text), "#{id} is not in Arabic: {text}");
    }
    assert_eq!(browser.script(&shown_text("space-state")).await, "مباشر");
    let heading = browser.script("return document.querySelector('#room h2').innerText").await;
    assert!(arabic(&heading), "the stage's heading: {heading}");

    // Right to left, as drawn: text runs from the right, and the layout is mirrored (the brand
    // at the right of the header, Listen at the right of its card, the first seat's name to the
    // right of its avatar).
    let direction = browser.script("return getComputedStyle(document.body).direction").await;
    assert_eq!(direction, "rtl");
    let brand = browser.script(&across(".brand", "header")).await.as_f64().unwrap_or(0.0);
    assert!(brand > 0.75, "the brand is not at the right of the header ({brand})");
    let listen_at = browser.script(&across("#listen", "#space-view .card")).await;
    assert!(
        listen_at.as_f64().is_some_and(|x| x > 0.6),
        "Listen is not on the right ({listen_at})"
    );
    let seat = "#stage [data-identity=\"demo-bot\"]";
    let name_vs_avatar = browser
        .script(&format!(
            "const s = document.querySelector('{seat}'); \
             return s.querySelector('.who').getBoundingClientRect().right \
                 <= s.querySelector('.avatar').getBoundingClientRect().left + 1"
        ))
        .await;
    assert_eq!(name_vs_avatar, true, "the name is not left of the avatar, as Arabic reads");
    assert_eq!(browser.script(TOO_WIDE).await, json!([]), "horizontal scroll in Arabic");
    assert_eq!(browser.script(HIDDEN_BUT_SHOWN).await, json!([]));

    // Screen readers hear who is talking, in Arabic (the stage's polite live region).
    let said = browser
        .wait_for(&shown_text("stage-live"), secs(15), |v| {
            v.as_str().is_some_and(|s| s.contains("يتحدث الآن") && s.contains("demo-bot"))
        })
        .await;
    assert!(
        said.as_str().is_some_and(|s| s.contains("يتحدث الآن") && s.contains("demo-bot")),
        "the live region never said who talks: {said}"
    );

    // Listen plays, and says so in Arabic.
    browser.click("listen").await;
    let level = browser.wait_above("return window.townhall.level()", 0.01, secs(20)).await;
    assert!(level > 0.01, "no sound in the Arabic page (best RMS {level})");
    assert_eq!(browser.script(&shown_text("listen-state")).await, "تستمع الآن");
    assert_eq!(browser.script(&shown_text("stop")).await, "إيقاف");
    let lit = |v: &Value| v.as_str().is_some_and(|s| s.contains(TALKING_RING));
    browser.wait_for(&ring("demo-bot"), secs(15), lit).await;
    let listeners = browser.wait_above("return window.townhall.listeners()", 0.5, secs(10)).await;
    assert!(listeners >= 1.0, "the page does not count its own listener: {listeners}");
    let count = browser.script(&shown_text("listener-count")).await;
    assert!(arabic(&count), "the listener count is not in Arabic: {count}");
    let shot = target_dir().join("screenshots").join("page-arabic.png");
    browser.screenshot(&shot).await;
    eprintln!("Arabic screenshot: {}", shot.display());
    keep_for_docs(&shot, "page-arabic.png");

    // The switcher, with a click: English, left to right, while the sound goes on.
    browser.click("lang option[value=en]").await;
    let stop = browser.wait_for(&shown_text("stop"), secs(5), |v| v == "Stop").await;
    assert_eq!(stop, "Stop");
    assert_eq!(browser.script(&shown_text("listen-state")).await, "listening");
    assert_eq!(browser.script("return getComputedStyle(document.body).direction").await, "ltr");
    let stop_at = browser.script(&across("#stop", "#space-view .card")).await;
    assert!(stop_at.as_f64().is_some_and(|x| x < 0.4), "Stop is not on the left ({stop_at})");
    let english_badge = |v: &Value| {
        v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot" && m[1] == "Speaker"))
    };
    let stage = browser.wait_for(STAGE, secs(5), english_badge).await;
    assert!(english_badge(&stage), "the stage stays in Arabic: {stage}");
    let level = browser.wait_above("return window.townhall.level()", 0.01, secs(10)).await;
    assert!(level > 0.01, "switching the language stopped the sound");
    // The choice is kept: a new visit is in English although the browser says Arabic.
    browser.script("location.reload(); return true").await;
    let listen = browser.wait_for(&shown_text("listen"), secs(10), |v| v == "Listen").await;
    assert_eq!(listen, "Listen", "the choice of English was not kept");
    // And back to Arabic.
    browser.click("lang option[value=ar]").await;
    let listen = browser.wait_for(&shown_text("listen"), secs(5), |v| v == "استمع").await;
    assert_eq!(listen, "استمع");
    assert_eq!(browser.script("return getComputedStyle(document.body).direction").await, "rtl");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_can_ask_for_a_language() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/?lang=ar#/")).await;
    let title = browser.wait_for(&shown_text("list-view"), Duration::from_secs(10), arabic).await;
    assert!(arabic(&title), "?lang=ar did not give the list in Arabic: {title}");
    // Numbers written in the catalog use the digits Intl writes for Arabic, as the counts do.
    let digits = browser
        .script(
            "const o = document.querySelector('#clip-seconds option[value=\"30\"]').textContent; \
             return [o, new Intl.NumberFormat('ar').format(30)]",
        )
        .await;
    assert!(
        digits[0].as_str().zip(digits[1].as_str()).is_some_and(|(o, n)| o.starts_with(n)),
        "the clip lengths and Intl write numbers differently: {digits}"
    );
    assert_eq!(browser.script("return getComputedStyle(document.body).direction").await, "rtl");
    // The menu's choice wins over the address from then on (the address forgets its `?lang=`).
    browser.click("lang option[value=en]").await;
    browser.script("location.reload(); return true").await;
    let heading = browser
        .wait_for(
            "return document.querySelector('#list-view h1').innerText",
            Duration::from_secs(10),
            |v| v == "Spaces",
        )
        .await;
    assert_eq!(heading, "Spaces", "the choice of English did not outlast a reload");
    assert_eq!(browser.script("return location.search").await, "");
    browser.goto(&format!("http://{addr}/?lang=en#/")).await;
    let heading = browser
        .wait_for(
            "return document.querySelector('#list-view h1').innerText",
            Duration::from_secs(10),
            |v| v == "Spaces",
        )
        .await;
    assert_eq!(heading, "Spaces");
    browser.close().await;
    server.shutdown().await;
}

/// JS: the element that has the focus now, and whether a person can see where it is: its
/// description, and the outline or shadow drawn around it.
const FOCUSED: &str = "const e = document.activeElement; \
     if (!e || e === document.body) return null; \
     e.dataset.tabbed = '1'; const s = getComputedStyle(e); \
     const ring = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none'; \
     const r = e.getBoundingClientRect(); \
     return { id: e.id || e.tagName.toLowerCase() + ':' + (e.innerText || e.getAttribute('aria-label') || '').trim(), \
              ring, outline: `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`, \
              seen: r.width > 0 && r.height > 0 }";

/// JS: the controls a person can see and use that the keyboard never reached (those folded
/// in a closed `<details>` are reached once its summary opens it).
const NOT_TABBED: &str = "return [...document.querySelectorAll( \
         'a[href], button, select, input, textarea, summary, [tabindex]')] \
     .filter((e) => e.getClientRects().length > 0 && !e.disabled && e.tabIndex >= 0 \
         && getComputedStyle(e).visibility !== 'hidden' && !e.dataset.tabbed \
         && !(e.closest('details:not([open])') && e.tagName !== 'SUMMARY')) \
     .map((e) => e.id || e.outerHTML.slice(0, 80))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_of_the_demo_is_reached_by_keyboard_with_a_visible_focus_and_listen_plays() {
    if browser_available().is_none() {
        return;
    }
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    let on_stage = |v: &Value| v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot"));
    let stage = browser.wait_for(STAGE, secs(10), on_stage).await;
    assert!(on_stage(&stage), "no stage: {stage}");

    // Tab through the whole page, once around.
    let mut order: Vec<String> = Vec::new();
    for _ in 0..80 {
        browser.press("\u{E004}").await;
        let focused = browser.script(FOCUSED).await;
        if focused.is_null() {
            if order.is_empty() {
                continue;
            }
            break; // past the last control
        }
        let id = focused["id"].as_str().unwrap_or("").to_owned();
        if order.first() == Some(&id) {
            break; // around again
        }
        assert_eq!(focused["ring"], true, "{id} has the focus and shows no ring: {focused}");
        assert_eq!(focused["seen"], true, "{id} has the focus but is not on the page: {focused}");
        order.push(id);
    }
    eprintln!("tab order: {order:?}");
    for id in ["lang", "host-toggle", "listen", "listen-rtc", "clip"] {
        assert!(order.iter().any(|o| o == id), "Tab never reaches #{id}: {order:?}");
    }
    let missed = browser.script(NOT_TABBED).await;
    assert_eq!(missed, json!([]), "controls the keyboard cannot reach (tab order {order:?})");

    // To Listen by keyboard, Enter: it plays, and the focus lands on Stop.
    let mut on_listen = false;
    for _ in 0..80 {
        browser.press("\u{E004}").await;
        if browser.script("return document.activeElement.id").await == "listen" {
            on_listen = true;
            break;
        }
    }
    assert!(on_listen, "Tab never came back to Listen");
    browser.press("\u{E007}").await;
    let level = browser.wait_above("return window.townhall.level()", 0.01, secs(20)).await;
    let state = browser.script("return window.townhall.state()").await;
    assert!(level > 0.01, "Enter on Listen played nothing (best RMS {level}, {state})");
    assert_eq!(state, "listening");
    let focused = browser.script(FOCUSED).await;
    assert_eq!(focused["id"], "stop", "the focus did not follow to Stop: {focused}");
    assert_eq!(focused["ring"], true, "{focused}");
    // Enter on Stop: silence, and the focus is back on Listen.
    browser.press("\u{E007}").await;
    let state =
        browser.wait_for("return window.townhall.state()", secs(5), |v| v == "not listening").await;
    assert_eq!(state, "not listening");
    assert_eq!(browser.script("return document.activeElement.id").await, "listen");

    // Screen readers get names for the controls that show only a symbol, and hear the stage.
    let label = |id: &str| {
        format!(
            "const e = document.getElementById('{id}'); \
             return e.getAttribute('aria-label') || e.innerText.trim()"
        )
    };
    assert_eq!(browser.script(&label("lang")).await, "Language");
    browser.close().await;
    server.shutdown().await;
}

/// The axe-core checker (`web/vendor/axe-core`, test only: the server does not serve it).
fn axe_source() -> Option<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../web/vendor/axe-core/axe.min.js");
    std::fs::read_to_string(&path).ok()
}

/// Runs axe-core in the page; returns its serious and critical violations, each as
/// `{id, impact, help, nodes: [selector and why]}`.
async fn serious_violations(browser: &Browser, axe: &str) -> Value {
    let loaded = browser.script(&format!("{axe}\n;return typeof window.axe")).await;
    assert_eq!(loaded, "object", "axe-core did not load in the page");
    let report = browser
        .script_async(
            "const done = arguments[arguments.length - 1]; \
             const worst = (v) => v.impact === 'serious' || v.impact === 'critical'; \
             axe.run(document).then((r) => done({ \
                 passed: r.passes.length, \
                 minor: r.violations.filter((v) => !worst(v)).map((v) => `${v.id} (${v.impact})`), \
                 serious: r.violations.filter(worst).map((v) => ({ id: v.id, impact: v.impact, \
                     help: v.help, \
                     nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`) })) \
             }), (e) => done({ passed: 0, serious: [{ id: 'axe-error', help: String(e) }] }))",
        )
        .await;
    // axe really looked: rules passed (a page it could not read would pass none).
    let passed = report["passed"].as_u64().unwrap_or(0);
    assert!(passed >= 10, "axe-core passed only {passed} rules: {report}");
    eprintln!("axe-core: {passed} rules passed; moderate and minor: {}", report["minor"]);
    report["serious"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axe_finds_no_serious_accessibility_violations_on_the_home_demo_and_arabic_pages() {
    if browser_available().is_none() {
        return;
    }
    let Some(axe) = axe_source() else {
        eprintln!("web/vendor/axe-core/axe.min.js is missing: skipping (see its README)");
        return;
    };
    let server = demo_server(townhall_server::Config::default()).await;
    let addr = server.addr();
    let secs = Duration::from_secs;
    let browser = Browser::start().await;
    let on_stage = |v: &Value| v.as_array().is_some_and(|s| s.iter().any(|m| m[0] == "demo-bot"));

    // The home page: the list of spaces.
    browser.goto(&format!("http://{addr}/#/")).await;
    let listed = "return document.querySelectorAll('#spaces li').length";
    browser.wait_for(listed, secs(10), |v| v.as_u64() > Some(0)).await;
    let home = serious_violations(&browser, &axe).await;
    assert_eq!(home, json!([]), "the home page");

    // The live demo, before and while listening.
    browser.goto(&format!("http://{addr}/#/space/demo")).await;
    browser.wait_for(STAGE, secs(10), on_stage).await;
    let demo = serious_violations(&browser, &axe).await;
    assert_eq!(demo, json!([]), "the demo space");
    browser.click("listen").await;
    browser.wait_for("return window.townhall.state()", secs(20), |v| v == "listening").await;
    let listening = serious_violations(&browser, &axe).await;
    assert_eq!(listening, json!([]), "the demo space, listening");

    // The same in Arabic, right to left.
    browser.goto(&format!("http://{addr}/?lang=ar#/space/demo")).await;
    browser.wait_for(&shown_text("listen"), secs(10), |v| v == "استمع").await;
    browser.wait_for(STAGE, secs(10), on_stage).await;
    let arabic_page = serious_violations(&browser, &axe).await;
    assert_eq!(arabic_page, json!([]), "the Arabic demo space");
    browser.close().await;
    server.shutdown().await;
}
