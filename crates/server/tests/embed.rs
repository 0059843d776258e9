//! The embeddable player and oEmbed on a real server: who may frame what (the player's own
//! `frame-ancestors`, the page's kept), the audio the player points at actually playing (live,
//! then the replay), oEmbed's answer and its refusals; private spaces look like unknown ones.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use townhall_core::Role;
use townhall_server::Config;

const HARD_TITLE: &str = "Q&A <live> \"quoted\" 'single' — Café ☕";
const HARD_TITLE_HTML: &str = "Q&amp;A &lt;live&gt; &quot;quoted&quot; &#39;single&#39; — Café ☕";

async fn create(addr: SocketAddr, id: &str, title: &str, public: bool) {
    let res = http()
        .post(format!("http://{addr}/api/v1/spaces"))
        .bearer_auth(token("alice", Role::Host, "*"))
        .json(&json!({ "id": id, "title": title, "live": true, "public": public }))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "create {id}: {}", res.text().await.unwrap_or_default());
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Value {
    let res = http()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(host())
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.expect("json")
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    http().get(format!("http://{addr}{path}")).send().await.expect("get")
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// The value of `attr="..."` on the first element of `html` that has it.
fn attr<'a>(html: &'a str, attr: &str) -> &'a str {
    let start = html.find(&format!(" {attr}=\"")).unwrap_or_else(|| panic!("no {attr} in {html}"))
        + attr.len()
        + 3;
    let len = html[start..].find('"').expect("closing quote");
    &html[start..start + len]
}

fn frame_ancestors(res: &reqwest::Response) -> String {
    let csp = header(res, "content-security-policy");
    let fa = csp.split(';').map(str::trim).find(|d| d.starts_with("frame-ancestors "));
    fa.unwrap_or_else(|| panic!("no frame-ancestors in {csp:?}")).to_owned()
}

/// An oEmbed request for `url` (with more query pairs).
async fn oembed(addr: SocketAddr, url: &str, more: &[(&str, &str)]) -> reqwest::Response {
    let mut pairs = vec![("url", url)];
    pairs.extend_from_slice(more);
    let query = serde_urlencoded::to_string(&pairs).expect("query");
    get(addr, &format!("/oembed?{query}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_player_may_be_framed_anywhere_and_plays_live_then_the_replay() {
    let dir = std::env::temp_dir().join(format!("townhall-embed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = server_with(Config { data_dir: dir.clone(), ..Config::default() }).await;
    let addr = server.addr();
    create(addr, "open", HARD_TITLE, true).await;
    create(addr, "hidden", "Private", false).await;

    // The player: framable by anyone; the page keeps the operator's 'none'.
    let res = get(addr, "/embed/open").await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    assert_eq!(frame_ancestors(&res), "frame-ancestors *");
    let csp = header(&res, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("media-src 'self'"), "{csp}");
    let page = get(addr, "/").await;
    assert_eq!(frame_ancestors(&page), "frame-ancestors 'none'");
    let html = res.text().await.expect("html");
    assert!(html.contains(&format!(">{HARD_TITLE_HTML}</a>")), "{html}");
    assert!(!html.contains("<live>"), "an unescaped title");
    assert!(html.contains("data-state=\"live\"") && html.contains(">Live</span>"), "{html}");
    assert!(html.contains("id=\"play\"") && !html.contains("disabled>"), "{html}");
    assert!(!html.contains("token") && !html.contains("record"), "no sign-in, no host controls");
    // oEmbed discovery.
    let discovery = html
        .split('<')
        .find(|tag| tag.starts_with("link rel=\"alternate\" type=\"application/json+oembed\""))
        .expect("an oEmbed discovery link");
    let href = attr(discovery, "href").replace("&amp;", "&");
    let embed_url = format!("http://{addr}/embed/open");
    let expected = serde_urlencoded::to_string([("url", embed_url.as_str()), ("format", "json")]);
    assert_eq!(href, format!("http://{addr}/oembed?{}", expected.expect("query")));
    let discovered = http().get(&href).send().await.expect("oembed");
    assert_eq!(discovered.status(), 200);
    assert_eq!(discovered.json::<Value>().await.expect("json")["type"], "rich");
    // Its script and style are served, and the audio it points at plays.
    for asset in ["/embed.js", "/embed.css"] {
        assert_eq!(get(addr, asset).await.status(), 200, "{asset}");
    }
    let audio = attr(&html, "data-src");
    assert_eq!(audio, "/live/open.opus");
    let (status, body) =
        capture_http(&format!("http://{addr}{audio}"), Duration::from_millis(1_500)).await;
    assert_eq!(status, 200);
    let pages = body.windows(4).filter(|w| w == b"OggS").count();
    assert!(body.starts_with(b"OggS") && pages >= 4, "{pages} Ogg pages in {} bytes", body.len());

    // Private and unknown look the same; malformed is a 400.
    for missing in ["/embed/hidden", "/embed/nope"] {
        let res = get(addr, missing).await;
        assert_error(res, 404, "not_found").await;
    }
    assert_error(get(addr, "/embed/Not_An_Id").await, 400, "invalid_space_id").await;

    // Ended with a recording: the replay; ended without: nothing to play.
    post(addr, "/api/v1/spaces/open/recording", json!({ "recording": true })).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let done = post(addr, "/api/v1/spaces/open/recording", json!({ "recording": false })).await;
    post(addr, "/api/v1/spaces/open/end", json!({})).await;
    let html = get(addr, "/embed/open").await.text().await.expect("html");
    assert!(html.contains("data-state=\"ended\"") && html.contains(">Ended</span>"), "{html}");
    let replay = attr(&html, "data-src");
    assert_eq!(replay, format!("/recordings/{}.opus", done["id"].as_str().expect("id")));
    let res = get(addr, replay).await;
    assert_eq!(res.status(), 200);
    let file = res.bytes().await.expect("file");
    assert_eq!(file.len() as u64, done["bytes"].as_u64().expect("bytes"));
    create(addr, "quiet", "Nothing recorded", true).await;
    post(addr, "/api/v1/spaces/quiet/end", json!({})).await;
    let html = get(addr, "/embed/quiet").await.text().await.expect("html");
    assert_eq!(attr(&html, "data-src"), "");
    assert!(html.contains("disabled>"), "nothing to play: the button is disabled");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn oembed_describes_this_nodes_public_spaces_within_the_consumers_bounds() {
    let server = server_with(Config {
        embed_frame_ancestors: "https://blog.example.com 'self'".into(),
        frame_ancestors: "'self'".into(),
        ..Config::default()
    })
    .await;
    let addr = server.addr();
    create(addr, "open", HARD_TITLE, true).await;
    create(addr, "hidden", "Private", false).await;

    let res = oembed(addr, &format!("http://{addr}/#/space/open"), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(header(&res, "content-type").starts_with("application/json"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["type"], "rich");
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["title"], HARD_TITLE);
    assert_eq!(body["provider_name"], "Townhall");
    assert_eq!(body["provider_url"], format!("http://{addr}/"));
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(480), Some(96)));
    let html = body["html"].as_str().expect("html");
    assert!(
        html.starts_with(&format!(
            "<iframe src=\"http://{addr}/embed/open\" width=\"480\" height=\"96\""
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!("title=\"{HARD_TITLE_HTML}\"")) && html.ends_with("</iframe>"),
        "{html}"
    );
    // The iframe's page exists and may be framed as configured; the others keep theirs.
    let framed = http().get(attr(html, "src")).send().await.expect("embed");
    assert_eq!(framed.status(), 200);
    assert_eq!(frame_ancestors(&framed), "frame-ancestors https://blog.example.com 'self'");
    assert_eq!(frame_ancestors(&get(addr, "/").await), "frame-ancestors 'self'");

    // The player's URL too, and the consumer's bounds.
    let res = oembed(
        addr,
        &format!("http://{addr}/embed/open"),
        &[("format", "json"), ("maxwidth", "300"), ("maxheight", "50")],
    )
    .await;
    let body: Value = res.json().await.expect("json");
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(300), Some(50)));
    assert!(body["html"].as_str().is_some_and(|h| h.contains("width=\"300\" height=\"50\"")));

    // Refusals.
    let open = format!("http://{addr}/embed/open");
    let res = oembed(addr, &open, &[("format", "xml")]).await;
    assert_error(res, 501, "format_not_supported").await;
    for foreign in [
        "http://evil.example/embed/open".to_owned(),
        format!("http://{addr}/live/open.opus"),
        format!("ftp://{addr}/embed/open"),
        "not a url".to_owned(),
    ] {
        assert_error(oembed(addr, &foreign, &[]).await, 400, "invalid_url").await;
    }
    for missing in ["hidden", "nope"] {
        let res = oembed(addr, &format!("http://{addr}/embed/{missing}"), &[]).await;
        assert_error(res, 404, "not_found").await;
    }
    assert_error(get(addr, "/oembed").await, 400, "bad_query").await;
    let res = oembed(addr, &open, &[("maxwidth", "wide")]).await;
    assert_error(res, 400, "bad_query").await;
    server.shutdown().await;
}
