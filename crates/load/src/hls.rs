//! An LL-HLS listener, as a player behaves: read the playlist, then repeatedly fetch the
//! preload-hinted part (the server holds it until it exists) and the blocking playlist for the
//! part after it. Each part's lateness is measured against its place on the stream's clock
//! (`EXT-X-PROGRAM-DATE-TIME` plus the durations before it).

use std::io;

use crate::http::Conn;

use crate::http::{self, ReadBuf};
use crate::target::Target;

/// What a media playlist says about one part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartInfo {
    /// Segment number.
    pub msn: u64,
    /// Part index.
    pub part: u32,
    /// Duration, seconds.
    pub duration: f64,
    /// When the part ends on the stream's clock, µs since the epoch (if the playlist dates it).
    pub end_us: Option<u64>,
}

/// The facts a listener needs from a media playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Playlist {
    /// Every listed part.
    pub parts: Vec<PartInfo>,
    /// The preload hint: (msn, part).
    pub hint: Option<(u64, u32)>,
    /// `EXT-X-ENDLIST` seen.
    pub ended: bool,
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.fff)Z` into µs since the epoch.
pub fn parse_date(text: &str) -> Option<u64> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Reads a media playlist (the tags Townhall writes, and what any LL-HLS server writes the same
/// way: parts named by `URI="p{msn}.{part}.mp4"` are not required).
pub fn parse_playlist(text: &str) -> Playlist {
    let mut out = Playlist::default();
    let mut msn: u64 = 0;
    let mut part_index: u32 = 0;
    let mut clock: Option<u64> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            clock = parse_date(v.trim());
            part_index = 0;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            let duration: f64 = v.split(',').next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
            let end_us = clock.map(|c| c + (duration * 1e6) as u64);
            clock = end_us;
            out.parts.push(PartInfo { msn, part: part_index, duration, end_us });
            part_index += 1;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            // A segment line follows; its parts (if listed) were counted; advance the clock over
            // unlisted parts by the segment's duration.
            if part_index == 0 {
                let d: f64 = v.trim_end_matches(',').parse().unwrap_or(0.0);
                clock = clock.map(|c| c + (d * 1e6) as u64);
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            msn += 1;
            part_index = 0;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"") {
            let name = v.trim_end_matches('"').trim_start_matches('p').trim_end_matches(".mp4");
            if let Some((m, p)) = name.split_once('.') {
                out.hint = m.parse().ok().zip(p.parse().ok());
            }
        } else if line.starts_with("#EXT-X-ENDLIST") {
            out.ended = true;
        }
    }
    out
}

/// One keep-alive HTTP connection doing sequential GETs.
pub struct HlsClient {
    target: Target,
    source: std::net::IpAddr,
    stream: Option<Conn>,
    buf: ReadBuf,
}

impl HlsClient {
    /// A client connecting from `source`.
    pub fn new(target: Target, source: std::net::IpAddr) -> HlsClient {
        HlsClient { target, source, stream: None, buf: ReadBuf::new(16 * 1024) }
    }

    /// GETs `path`; returns the status and body. Reconnects when the server closed the
    /// connection.
    pub async fn get(&mut self, path: &str) -> io::Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                self.stream = Some(http::connect(&self.target, self.source).await?);
                self.buf = ReadBuf::new(16 * 1024);
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            let result = async {
                http::get(stream, &self.target, path, "").await?;
                let head = http::read_head(stream, &mut self.buf).await?;
                let body = http::read_body(stream, &mut self.buf, head).await?;
                Ok::<_, io::Error>((head.status, body))
            }
            .await;
            match result {
                Ok(answer) => return Ok(answer),
                Err(e) if attempt == 0 => {
                    self.stream = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not reach the server"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn townhall_playlists_parse() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:2.000,\ns7.mp4\n\
            #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z\n\
            #EXT-X-PART:DURATION=0.200,URI=\"p8.0.mp4\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.200,URI=\"p8.1.mp4\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p8.2.mp4\"\n";
        let p = parse_playlist(text);
        assert_eq!(p.hint, Some((8, 2)));
        assert_eq!(p.parts.len(), 2);
        assert_eq!((p.parts[1].msn, p.parts[1].part), (8, 1));
        assert_eq!(p.parts[1].end_us, Some(1_700_000_002_400_000));
        assert!(!p.ended);
    }

    #[test]
    fn dates_parse_both_ways() {
        assert_eq!(parse_date("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date("2000-02-29T00:00:00.123Z"), Some(951_782_400_123_000));
        assert_eq!(parse_date("nonsense"), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,400}") {
            let _ = parse_playlist(&text);
            let _ = parse_date(&text);
        }
    }
}
