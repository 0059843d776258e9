//! Where the engine's program frames go. Every egress is a [`ProgramSink`]: the engine mixes a
//! frame once and offers the same shared bytes to each sink, without knowing what the sink is
//! (the listener feed, the LL-HLS packager, the WebRTC loop, a recorder; next, an edge's relay).
//! A sink never makes the engine wait: one that falls behind drops or skips, and one that says it
//! is done is let go.

use std::sync::Arc;

use townhall_core::Identity;
use townhall_media::wire::ProgramBatchWriter;
use townhall_media::{OggOpusMuxer, ProgramFrame, ProgramFrameView};

use crate::metrics::FRAMES_DROPPED;
use crate::pipeline::feed::{MAX_WS_BATCH, ProgramFeed, Protocol};
use crate::pipeline::hls_store::HlsStore;
use crate::pipeline::program::{ProgramPacket, ProgramShards};
use crate::pipeline::record_tap::RecordTap;

/// An egress of the program stream.
pub trait ProgramSink: Send {
    /// Takes one program frame (`last`: the stream ends with it). Never waits. `false` when the
    /// sink is done for good: the engine drops it.
    fn offer(&mut self, frame: &ProgramFrame, last: bool) -> bool;

    /// Who is talking changed after the frame last offered (the mixer's voice activity, named):
    /// `speakers` talk now, nobody else. Most sinks have no use for it.
    fn speaking(&mut self, _speakers: &[Identity]) {}

    /// The stream has ended (after the frame offered with `last`): flush and close.
    fn finish(&mut self) {}
}

/// Which sink an [`Ingest::Sink`](crate::pipeline::space_mix::Ingest::Sink) sets or removes: a
/// space has at most one sink under each name.
pub type SinkName = &'static str;

/// The frame as the wire format reads it.
pub(crate) fn view_of(frame: &ProgramFrame) -> ProgramFrameView<'_> {
    ProgramFrameView {
        seq: frame.seq,
        mixed_at_us: frame.mixed_at_us,
        capture_age_us: frame.capture_age_us,
        payload: &frame.payload,
    }
}

/// The listener feed: WebSocket batches (for each batch size someone listens with) and Ogg
/// pages, each built once and fanned out to every listener.
pub struct FeedSink {
    feed: Arc<ProgramFeed>,
    ws: [ProgramBatchWriter; MAX_WS_BATCH],
    ogg: OggOpusMuxer,
    /// Frames muxed into the Ogg page being built.
    ogg_pending: u64,
}

impl FeedSink {
    /// The sink of `feed`, muxing Ogg with `ogg`.
    pub fn new(feed: Arc<ProgramFeed>, ogg: OggOpusMuxer) -> FeedSink {
        FeedSink {
            feed,
            ws: std::array::from_fn(|i| ProgramBatchWriter::new(i + 1)),
            ogg,
            ogg_pending: 0,
        }
    }
}

impl ProgramSink for FeedSink {
    fn offer(&mut self, frame: &ProgramFrame, last: bool) -> bool {
        let view = view_of(frame);
        let in_use = self.feed.ws_batches_in_use();
        // One-frame messages are built for every frame: resuming listeners find them kept.
        if let Some(single) = self.ws[0].push(&view) {
            self.feed.publish_single(frame.seq, frame.mixed_at_us, &single, in_use[0]);
        }
        for (i, writer) in self.ws.iter_mut().enumerate().skip(1) {
            if in_use[i] {
                if let Some(batch) = writer.push(&view) {
                    self.feed.publish_ws(i + 1, &batch, u64::from(batch[1]));
                }
            } else {
                writer.finish();
            }
        }
        self.ogg_pending += 1;
        match self.ogg.push(&frame.payload, last) {
            Ok(Some(page)) => {
                self.feed.publish_ogg(page, self.ogg_pending);
                self.ogg_pending = 0;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(space = %self.feed.space(), "ogg muxing failed: {e}"),
        }
        true
    }

    fn finish(&mut self) {
        for (i, writer) in self.ws.iter_mut().enumerate() {
            if let Some(batch) = writer.finish() {
                self.feed.publish_ws(i + 1, &batch, u64::from(batch[1]));
            }
        }
        // Closing the feed makes its shards send listeners the `ended` event and a close frame.
        self.feed.close();
    }
}

impl ProgramSink for Arc<HlsStore> {
    fn offer(&mut self, frame: &ProgramFrame, _last: bool) -> bool {
        self.push(u64::from(frame.seq), frame.payload.clone(), frame.mixed_at_us);
        true
    }

    fn finish(&mut self) {
        HlsStore::finish(self);
    }
}

/// The WebRTC loops, while the space has WHEP listeners.
pub struct RtcSink {
    /// The RTC threads' queues (a frame goes to those with listeners of the space).
    pub tx: ProgramShards,
    /// The space's feed (its WHEP listener count, its id).
    pub feed: Arc<ProgramFeed>,
}

impl ProgramSink for RtcSink {
    fn offer(&mut self, frame: &ProgramFrame, _last: bool) -> bool {
        if self.feed.listeners(Protocol::Webrtc) == 0 {
            return true;
        }
        // Never waits: a WebRTC loop that is behind loses frames, the mixer does not.
        let refused = self.tx.offer(&ProgramPacket {
            space: self.feed.space().clone(),
            seq: frame.seq,
            payload: frame.payload.clone(),
            capture_us: view_of(frame).captured_at_us(),
            mixed_at_us: frame.mixed_at_us,
        });
        if refused > 0 {
            metrics::counter!(FRAMES_DROPPED, "protocol" => "webrtc").increment(refused as u64);
        }
        true
    }
}

impl ProgramSink for RecordTap {
    fn offer(&mut self, frame: &ProgramFrame, _last: bool) -> bool {
        // Never waits: a recorder whose disk is behind loses frames, the mixer does not.
        RecordTap::offer(self, frame.seq, &frame.payload)
    }

    fn speaking(&mut self, speakers: &[Identity]) {
        // In the frames' queue: the recorder knows exactly where in its audio the change was.
        RecordTap::speaking(self, speakers);
    }
}
