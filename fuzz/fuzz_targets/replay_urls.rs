//! The outside input of the replay routes: a host feed's path segment
//! (`/feeds/hosts/{identity}.rss`), oEmbed's `url` parameter and the `Host` header that absolute
//! URLs fall back on. Input: a selector byte, then the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_server::http::feeds::parse_host_file;
use townhall_server::http::oembed::parse_space_url;
use townhall_server::http::origin::valid_host;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(host) = parse_host_file(text) {
                assert_eq!(format!("{host}.rss"), text);
            }
        }
        1 => {
            if let Ok(id) = parse_space_url(text, "127.0.0.1:8080") {
                assert!(text.contains("127.0.0.1:8080") && text.contains(id.as_str()));
            }
        }
        _ => {
            if valid_host(text) {
                assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)));
            }
        }
    }
});
