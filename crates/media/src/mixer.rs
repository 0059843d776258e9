//! The mixer: one clock per space, every speaker decoded, summed, soft-clipped and encoded once.
//!
//! Each tick (20 ms, driven by the caller) the mixer takes the next frame of every speaker from
//! its jitter buffer (concealing a missing one with libopus's packet-loss concealment), decodes,
//! sums, soft-clips and encodes **once** into the program frame that every listener shares.
//! Speakers who want to hear the others get a *mix-minus*: the same sum without their own voice,
//! encoded for them alone (a handful of encodes per tick, never one per listener).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::frame::{FRAME_SAMPLES, MAX_OPUS_PACKET, SAMPLE_RATE};
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::wire::{NO_CAPTURE, SpeakerFrame};

/// Identifies one speaker connection inside a mixer.
pub type SourceId = u64;

/// Why the mixer could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MixerError {
    /// libopus refused to create or run an encoder or decoder.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// `add_source` with an id already in use.
    #[error("source {0} already exists")]
    DuplicateSource(SourceId),
}

/// Mixer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixerConfig {
    /// Program stream bitrate in bit/s.
    pub bitrate: i32,
    /// Encoder complexity, 0 (fastest) to 10 (best).
    pub complexity: i32,
    /// Jitter buffer sizing for every speaker.
    pub jitter: JitterConfig,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig { bitrate: 32_000, complexity: 8, jitter: JitterConfig::default() }
    }
}

/// One 20 ms frame of the program stream (or of a speaker's mix-minus).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramFrame {
    /// Frame number, +1 per tick.
    pub seq: u32,
    /// The caller's wall clock at the tick, µs since the epoch.
    pub mixed_at_us: u64,
    /// `mixed_at_us` minus the oldest speaker capture time mixed in ([`NO_CAPTURE`] if none).
    pub capture_age_us: u32,
    /// The encoded Opus packet, shared by every listener.
    pub payload: Bytes,
    /// Peak sample magnitude of the mix before soft clipping (above 1.0 when it had to clip).
    pub peak: f32,
}

/// Everything one tick produced.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The program frame.
    pub program: ProgramFrame,
    /// Mix-minus frames for the speakers that asked for one.
    pub returns: Vec<(SourceId, ProgramFrame)>,
}

/// A speaker inside the mixer.
struct Source {
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    pcm: Box<[f32; FRAME_SAMPLES]>,
    /// Contributed audio this tick.
    active: bool,
    muted: bool,
    peak: f32,
    capture_us: Option<u64>,
    ret: Option<Output>,
}

/// An encoder with its own clipper state and sequence counter.
struct Output {
    encoder: opus::Encoder,
    clip: opus::SoftClip,
    seq: u32,
}

impl Output {
    fn new(cfg: &MixerConfig) -> Result<Output, MixerError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(cfg.bitrate))?;
        encoder.set_complexity(cfg.complexity)?;
        encoder.set_signal(opus::Signal::Voice)?;
        Ok(Output { encoder, clip: opus::SoftClip::new(opus::Channels::Mono), seq: 0 })
    }

    /// Clips `pcm` in place and encodes it as the next frame.
    fn encode(
        &mut self,
        pcm: &mut [f32; FRAME_SAMPLES],
        scratch: &mut [u8; MAX_OPUS_PACKET],
        now_us: u64,
        capture_us: Option<u64>,
    ) -> ProgramFrame {
        let peak = pcm.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        self.clip.apply(pcm);
        // Encoding 960 finite samples into 1275 bytes cannot fail; if libopus ever refuses,
        // emit a one-byte silent frame rather than stopping the program stream.
        let payload = match self.encoder.encode_float(pcm, scratch) {
            Ok(n) if n > 0 => Bytes::copy_from_slice(&scratch[..n]),
            _ => Bytes::from_static(SILENT_FRAME),
        };
        let capture_age_us = capture_us.map_or(NO_CAPTURE, |c| {
            u32::try_from(now_us.saturating_sub(c)).unwrap_or(NO_CAPTURE - 1).min(NO_CAPTURE - 1)
        });
        let frame =
            ProgramFrame { seq: self.seq, mixed_at_us: now_us, capture_age_us, payload, peak };
        self.seq = self.seq.wrapping_add(1);
        frame
    }
}

/// A 20 ms CELT-only silence frame (TOC 0xF8: fullband, 20 ms, mono, one frame), valid Opus.
const SILENT_FRAME: &[u8] = &[0xF8, 0xFF, 0xFE];

/// Mixes any number of speakers into one program stream.
pub struct Mixer {
    cfg: MixerConfig,
    program: Output,
    sources: BTreeMap<SourceId, Source>,
    mix: Box<[f32; FRAME_SAMPLES]>,
    work: Box<[f32; FRAME_SAMPLES]>,
    scratch: Box<[u8; MAX_OPUS_PACKET]>,
    /// Per-tick capture times of active sources (reused, so ticks do not allocate for it).
    captures: Vec<(SourceId, Option<u64>)>,
    pre_skip: u16,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("seq", &self.program.seq)
            .finish_non_exhaustive()
    }
}

impl Mixer {
    /// A mixer with no speakers; it produces silence until one joins.
    pub fn new(cfg: MixerConfig) -> Result<Mixer, MixerError> {
        let mut program = Output::new(&cfg)?;
        let lookahead = program.encoder.get_lookahead()?;
        Ok(Mixer {
            cfg,
            program,
            sources: BTreeMap::new(),
            mix: Box::new([0.0; FRAME_SAMPLES]),
            work: Box::new([0.0; FRAME_SAMPLES]),
            scratch: Box::new([0; MAX_OPUS_PACKET]),
            captures: Vec::new(),
            pre_skip: u16::try_from(lookahead).unwrap_or(312),
        })
    }

    /// Samples a decoder must discard at the start of the program stream (Ogg pre-skip).
    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Adds a speaker. With `wants_return`, each tick also yields its mix-minus.
    pub fn add_source(&mut self, id: SourceId, wants_return: bool) -> Result<(), MixerError> {
        if self.sources.contains_key(&id) {
            return Err(MixerError::DuplicateSource(id));
        }
        let source = Source {
            jitter: JitterBuffer::new(self.cfg.jitter),
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
            pcm: Box::new([0.0; FRAME_SAMPLES]),
            active: false,
            muted: false,
            peak: 0.0,
            capture_us: None,
            ret: if wants_return { Some(Output::new(&self.cfg)?) } else { None },
        };
        self.sources.insert(id, source);
        Ok(())
    }

    /// Removes a speaker; returns its jitter statistics if it existed.
    pub fn remove_source(&mut self, id: SourceId) -> Option<JitterStats> {
        self.sources.remove(&id).map(|s| s.jitter.stats())
    }

    /// Queues a speaker's frame; false if the source is unknown.
    pub fn push(&mut self, id: SourceId, frame: SpeakerFrame) -> bool {
        match self.sources.get_mut(&id) {
            Some(source) => {
                source.jitter.push(frame);
                true
            }
            None => false,
        }
    }

    /// Mutes or unmutes a speaker (their frames are still decoded, to keep decoder state warm).
    pub fn set_muted(&mut self, id: SourceId, muted: bool) -> bool {
        self.sources.get_mut(&id).map(|s| s.muted = muted).is_some()
    }

    /// Jitter statistics of one speaker.
    pub fn source_stats(&self, id: SourceId) -> Option<JitterStats> {
        self.sources.get(&id).map(|s| s.jitter.stats())
    }

    /// Peak level (0.0 to 1.0) each speaker contributed in the last tick.
    pub fn levels(&self) -> impl Iterator<Item = (SourceId, f32)> + '_ {
        self.sources.iter().map(|(id, s)| (*id, if s.active { s.peak } else { 0.0 }))
    }

    /// Number of speakers.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Mixes one 20 ms frame at wall-clock time `now_us` (µs since the epoch).
    pub fn tick(&mut self, now_us: u64) -> Tick {
        self.mix.fill(0.0);
        let mut oldest_capture: Option<u64> = None;
        for source in self.sources.values_mut() {
            source.decode_next();
            if source.active {
                for (m, s) in self.mix.iter_mut().zip(source.pcm.iter()) {
                    *m += *s;
                }
                oldest_capture = min_opt(oldest_capture, source.capture_us);
            }
        }
        self.work.copy_from_slice(&self.mix[..]);
        let program =
            self.program.encode(&mut self.work, &mut self.scratch, now_us, oldest_capture);
        self.captures.clear();
        self.captures.extend(
            self.sources.iter().map(|(id, s)| (*id, if s.active { s.capture_us } else { None })),
        );
        let mut returns = Vec::new();
        for (id, source) in self.sources.iter_mut() {
            let Some(ret) = source.ret.as_mut() else {
                continue;
            };
            self.work.copy_from_slice(&self.mix[..]);
            if source.active {
                for (w, s) in self.work.iter_mut().zip(source.pcm.iter()) {
                    *w -= *s;
                }
            }
            let others = self
                .captures
                .iter()
                .filter(|(other, _)| other != id)
                .fold(None, |acc, (_, c)| min_opt(acc, *c));
            returns.push((*id, ret.encode(&mut self.work, &mut self.scratch, now_us, others)));
        }
        Tick { program, returns }
    }
}

impl Source {
    /// Decodes this tick's frame (or conceals, or stays silent) into `pcm`; sets `active`.
    fn decode_next(&mut self) {
        let (input, capture): (Option<Bytes>, Option<u64>) = match self.jitter.pop() {
            Playout::Frame(f) => (Some(f.payload), (f.sent_at_us != 0).then_some(f.sent_at_us)),
            Playout::Conceal => (Some(Bytes::new()), None),
            Playout::Idle => (None, None),
        };
        let Some(input) = input else {
            self.active = false;
            return;
        };
        let decoded = self.decoder.decode_float(&input, &mut self.pcm[..], false);
        let samples = match decoded {
            Ok(n) => n.min(FRAME_SAMPLES),
            // A packet libopus rejects is concealed instead.
            Err(_) => self.decoder.decode_float(&[], &mut self.pcm[..], false).unwrap_or(0),
        };
        self.pcm[samples..].fill(0.0);
        self.capture_us = capture;
        self.active = !self.muted;
        self.peak = self.pcm.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{ToneGenerator, tone_amplitude};

    /// Encodes a tone as a speaker would.
    struct Bot {
        tone: ToneGenerator,
        enc: opus::Encoder,
        seq: u32,
    }

    impl Bot {
        fn new(freq: f32, amplitude: f32) -> Bot {
            let enc =
                opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                    .expect("encoder");
            Bot { tone: ToneGenerator::new(freq, amplitude), enc, seq: 0 }
        }

        fn frame(&mut self, sent_at_us: u64) -> SpeakerFrame {
            let pcm = self.tone.next_frame();
            let payload = self.enc.encode_vec_float(&pcm, 1275).expect("encode");
            self.seq += 1;
            SpeakerFrame { seq: self.seq, sent_at_us, payload: Bytes::from(payload) }
        }
    }

    struct Ear {
        dec: opus::Decoder,
        pcm: Vec<f32>,
    }

    impl Ear {
        fn new() -> Ear {
            Ear {
                dec: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("dec"),
                pcm: Vec::new(),
            }
        }

        fn hear(&mut self, frame: &ProgramFrame) {
            let mut buf = [0.0f32; FRAME_SAMPLES];
            let n = self.dec.decode_float(&frame.payload, &mut buf, false).expect("decode");
            self.pcm.extend_from_slice(&buf[..n]);
        }

        /// The last half second.
        fn tail(&self) -> &[f32] {
            &self.pcm[self.pcm.len().saturating_sub(24_000)..]
        }
    }

    fn run(mixer: &mut Mixer, bots: &mut [(SourceId, Bot)], ticks: u32) -> Vec<Tick> {
        (0..ticks)
            .map(|t| {
                let now = 1_000_000 + u64::from(t) * 20_000;
                for (id, bot) in bots.iter_mut() {
                    assert!(mixer.push(*id, bot.frame(now - 5_000)));
                }
                mixer.tick(now)
            })
            .collect()
    }

    #[test]
    fn one_speaker_reaches_the_program() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, false).expect("add");
        let ticks = run(&mut mixer, &mut [(1, Bot::new(440.0, 0.5))], 100);
        let mut ear = Ear::new();
        for (i, t) in ticks.iter().enumerate() {
            assert_eq!(t.program.seq, i as u32, "program sequence is continuous");
            ear.hear(&t.program);
        }
        let amp = tone_amplitude(ear.tail(), 440.0);
        assert!(amp > 0.3 && amp < 0.7, "440 Hz amplitude {amp}");
        let last = &ticks[99].program;
        // Sent 5 ms before its tick, then held two ticks by the jitter buffer (target depth 3).
        assert_eq!(last.capture_age_us, 5_000 + 2 * 20_000);
    }

    #[test]
    fn two_speakers_are_both_heard_and_each_return_lacks_its_own_voice() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, true).expect("add");
        mixer.add_source(2, true).expect("add");
        let mut bots = [(1, Bot::new(440.0, 0.3)), (2, Bot::new(660.0, 0.3))];
        let ticks = run(&mut mixer, &mut bots, 100);
        let (mut program, mut ret1, mut ret2) = (Ear::new(), Ear::new(), Ear::new());
        for t in &ticks {
            program.hear(&t.program);
            assert_eq!(t.returns.len(), 2);
            for (id, frame) in &t.returns {
                if *id == 1 { ret1.hear(frame) } else { ret2.hear(frame) }
            }
        }
        assert!(tone_amplitude(program.tail(), 440.0) > 0.15);
        assert!(tone_amplitude(program.tail(), 660.0) > 0.15);
        assert!(tone_amplitude(ret1.tail(), 440.0) < 0.03, "speaker 1 hears itself");
        assert!(tone_amplitude(ret1.tail(), 660.0) > 0.15, "speaker 1 misses speaker 2");
        assert!(tone_amplitude(ret2.tail(), 660.0) < 0.03, "speaker 2 hears itself");
        assert!(tone_amplitude(ret2.tail(), 440.0) > 0.15, "speaker 2 misses speaker 1");
    }

    #[test]
    fn loud_speakers_are_soft_clipped_not_wrapped() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        let mut bots: Vec<(SourceId, Bot)> =
            (1..=3).map(|i| (i, Bot::new(300.0 + 50.0 * i as f32, 0.9))).collect();
        for (id, _) in &bots {
            mixer.add_source(*id, false).expect("add");
        }
        let ticks = run(&mut mixer, &mut bots, 60);
        assert!(ticks.iter().skip(10).any(|t| t.program.peak > 1.0), "the sum does exceed 1.0");
        let mut ear = Ear::new();
        ticks.iter().for_each(|t| ear.hear(&t.program));
        let max = ear.pcm.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(max < 1.2, "decoded peak {max}");
    }

    #[test]
    fn program_keeps_running_when_a_speaker_goes_away() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, false).expect("add");
        let mut bots = [(1, Bot::new(440.0, 0.5))];
        let mut ticks = run(&mut mixer, &mut bots, 50);
        assert!(mixer.remove_source(1).is_some());
        assert!(!mixer.push(1, bots[0].1.frame(0)), "unknown source refused");
        ticks.extend((0..50).map(|t| mixer.tick(3_000_000 + t * 20_000)));
        let mut ear = Ear::new();
        for (i, t) in ticks.iter().enumerate() {
            assert_eq!(t.program.seq, i as u32);
            ear.hear(&t.program);
        }
        assert!(tone_amplitude(ear.tail(), 440.0) < 0.01, "silence after the speaker left");
        assert_eq!(ticks[99].program.capture_age_us, NO_CAPTURE);
    }

    #[test]
    fn lost_frames_are_concealed() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, false).expect("add");
        let mut bot = Bot::new(440.0, 0.5);
        let mut ear = Ear::new();
        for t in 0..100u64 {
            let frame = bot.frame(0);
            if t % 10 != 5 {
                mixer.push(1, frame);
            }
            ear.hear(&mixer.tick(t * 20_000).program);
        }
        let stats = mixer.source_stats(1).expect("stats");
        assert_eq!(stats.concealed, 10);
        assert!(tone_amplitude(ear.tail(), 440.0) > 0.25, "tone survives 10% loss");
    }

    #[test]
    fn muted_speakers_are_not_heard() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, false).expect("add");
        assert!(mixer.set_muted(1, true));
        let ticks = run(&mut mixer, &mut [(1, Bot::new(440.0, 0.5))], 50);
        let mut ear = Ear::new();
        ticks.iter().for_each(|t| ear.hear(&t.program));
        assert!(tone_amplitude(ear.tail(), 440.0) < 0.01);
    }
}
