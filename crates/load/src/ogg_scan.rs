//! Incremental Ogg page scanning for listeners: packets, granules and page numbers, read in
//! place without copying audio.

/// What one Ogg page says about timing and continuity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// Granule position (48 kHz samples for Opus).
    pub granule: u64,
    /// Page sequence number.
    pub seq: u32,
    /// Packets completed on this page.
    pub packets: u32,
    /// Beginning-of-stream page.
    pub bos: bool,
    /// Total page length in bytes.
    pub len: usize,
}

/// The data does not start with an Ogg page: the stream lost sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not at an Ogg page boundary")]
pub struct LostSync;

/// Parses the page at the start of `data`, if complete.
pub fn parse_page(data: &[u8]) -> Result<Option<PageInfo>, LostSync> {
    if data.len() < 27 {
        return if data.len() >= 4 && &data[..4] != b"OggS" { Err(LostSync) } else { Ok(None) };
    }
    if &data[..4] != b"OggS" || data[4] != 0 {
        return Err(LostSync);
    }
    let segments = usize::from(data[26]);
    if data.len() < 27 + segments {
        return Ok(None);
    }
    let lacing = &data[27..27 + segments];
    let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let len = 27 + segments + body;
    if data.len() < len {
        return Ok(None);
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&data[6..14]);
    Ok(Some(PageInfo {
        granule: u64::from_le_bytes(g),
        seq: u32::from_le_bytes([data[18], data[19], data[20], data[21]]),
        packets: lacing.iter().filter(|&&l| l < 255).count() as u32,
        bos: data[5] & 0x02 != 0,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pages_from_the_muxer_parse() {
        let mut mux = townhall_media::OggOpusMuxer::new(9, 312, 3, "t").expect("mux");
        let headers = mux.headers();
        let first = parse_page(&headers).expect("sync").expect("complete");
        assert!(first.bos);
        let mut page = None;
        for _ in 0..3 {
            page = mux.push(&[0xF8, 0xFF, 0xFE], false).expect("push");
        }
        let page = page.expect("third packet ends a page");
        let info = parse_page(&page).expect("sync").expect("complete");
        assert_eq!((info.granule, info.packets, info.len, info.bos), (2_880, 3, page.len(), false));
        assert_eq!(parse_page(&page[..page.len() - 1]), Ok(None));
        assert_eq!(parse_page(b"HTTP/1.1 200 OK\r\n\r\n...................."), Err(LostSync));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(info)) = parse_page(&data) {
                prop_assert!(info.len <= data.len());
            }
        }
    }
}
