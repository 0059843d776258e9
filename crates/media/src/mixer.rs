//! The mixer: one clock per space, every speaker decoded, summed, soft-clipped and encoded once.
//!
//! Each tick (20 ms, driven by the caller) the mixer takes the next frame of every speaker from
//! its jitter buffer (concealing a missing one with libopus's packet-loss concealment), decodes,
//! sums, soft-clips and encodes **once** into the program frame that every listener shares.
//! Speakers who want to hear the others get a *mix-minus*: the same sum without their own voice,
//! encoded for them alone (a handful of encodes per tick, never one per listener).
//!
//! Work is spent only on sound. A speaker who sent nothing, is muted, or sent a DTX frame is not
//! decoded (a missing frame is concealed only while the speaker's last decoded frame was audio,
//! so concealment never replays speech from before a pause). A speaker whose contribution has
//! been silence for [`RETURN_HANGOVER_TICKS`] ticks already hears exactly what everyone else
//! hears: their return is the program frame itself ([`Return::Program`], the same `Bytes`),
//! and no mix-minus is encoded for them. On a stage of 13 with one or two talking, that is two or
//! three encodes a tick instead of fourteen.

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
    /// Program encoder complexity, 0 (fastest) to 10 (best).
    pub complexity: i32,
    /// Mix-minus encoder complexity, 0 (fastest) to 10 (best).
    pub return_complexity: i32,
    /// Jitter buffer sizing for every speaker.
    pub jitter: JitterConfig,
}

impl Default for MixerConfig {
    fn default() -> Self {
        MixerConfig {
            bitrate: 32_000,
            complexity: 8,
            // A speaker's return is a monitor, heard while talking; the program is what the
            // world hears and records. 5 costs ~0.78x of 8 per encode (benches/mixer.rs).
            return_complexity: 5,
            jitter: JitterConfig::default(),
        }
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

/// Codec work a mixer has done since it started: what "less work per tick" is measured by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerWork {
    /// Frames decoded (concealments included).
    pub decodes: u64,
    /// Mix-minus frames encoded (priming encodes included).
    pub return_encodes: u64,
    /// Returns that were the program frame itself, nothing encoded.
    pub program_returns: u64,
}

/// What a speaker who asked to hear the others gets for one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Return {
    /// Their own contribution was silence: they hear the program frame itself (the same
    /// `Bytes`); nothing was encoded for them.
    Program,
    /// Everyone but them, encoded for them alone (same `seq` as the tick's program frame).
    MixMinus(ProgramFrame),
}

/// Everything one tick produced.
#[derive(Debug, Clone)]
pub struct Tick {
    /// The program frame.
    pub program: ProgramFrame,
    /// What each speaker that asked for a return hears.
    pub returns: Vec<(SourceId, Return)>,
}

impl Tick {
    /// Each return with the frame it stands for (the program frame for [`Return::Program`]).
    pub fn return_frames(&self) -> impl Iterator<Item = (SourceId, &ProgramFrame)> + '_ {
        self.returns.iter().map(|(id, ret)| match ret {
            Return::Program => (*id, &self.program),
            Return::MixMinus(frame) => (*id, frame),
        })
    }
}

/// Ticks a speaker's contribution stays below [`SILENT_PEAK`] before their return switches from
/// a mix-minus to the program (300 ms): pauses between words do not flip it back and forth, and
/// the tail of a word is never heard back.
pub const RETURN_HANGOVER_TICKS: u32 = 15;

/// A decoded frame whose peak stays below this (-54 dBFS) counts as silence: a speaker this
/// quiet who hears the program hears their own sound at most this loud, 60 ms or more late and
/// under everyone else; a 20 ms frame of speech peaks far above it.
pub const SILENT_PEAK: f32 = 0.002;

/// Packets this short carry no audio: DTX (libopus conceals or makes comfort noise for them).
const DTX_MAX_BYTES: usize = 2;

/// A speaker inside the mixer.
struct Source {
    jitter: JitterBuffer,
    decoder: opus::Decoder,
    pcm: Box<[f32; FRAME_SAMPLES]>,
    /// Contributed audio this tick (decoded or concealed, not muted).
    active: bool,
    /// The last decode was audio (a frame or its concealment): a missing frame may be concealed.
    can_conceal: bool,
    muted: bool,
    peak: f32,
    capture_us: Option<u64>,
    /// Ticks since this speaker's contribution was last above [`SILENT_PEAK`] (saturating).
    quiet_ticks: u32,
    ret: Option<Output>,
}

/// An encoder with its own clipper state and sequence counter.
struct Output {
    encoder: opus::Encoder,
    clip: opus::SoftClip,
    seq: u32,
    /// Encoded the tick before this one (a return that skipped ticks is primed first).
    warm: bool,
}

impl Output {
    fn new(cfg: &MixerConfig, complexity: i32) -> Result<Output, MixerError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(cfg.bitrate))?;
        encoder.set_complexity(complexity)?;
        encoder.set_signal(opus::Signal::Voice)?;
        Ok(Output { encoder, clip: opus::SoftClip::new(opus::Channels::Mono), seq: 0, warm: false })
    }

    /// Readies a return that heard the program until now: a fresh encoder state, then the last
    /// program frame's samples encoded and thrown away, so the first mix-minus frame carries no
    /// stale lookahead and follows on from what the speaker's decoder just played.
    fn prime(&mut self, last: &[f32; FRAME_SAMPLES], scratch: &mut [u8; MAX_OPUS_PACKET]) {
        // Best effort both: an encoder that refused either still encodes.
        let _ = self.encoder.reset_state();
        self.clip = opus::SoftClip::new(opus::Channels::Mono);
        let _ = self.encoder.encode_float(&last[..], scratch);
        self.warm = true;
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
    /// The last tick's program samples as encoded (clipped): what primes a return.
    last_program: Box<[f32; FRAME_SAMPLES]>,
    /// This tick's, until the returns are done with `last_program`.
    this_program: Box<[f32; FRAME_SAMPLES]>,
    pre_skip: u16,
    work_done: MixerWork,
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
        let mut program = Output::new(&cfg, cfg.complexity)?;
        let lookahead = program.encoder.get_lookahead()?;
        Ok(Mixer {
            cfg,
            program,
            sources: BTreeMap::new(),
            mix: Box::new([0.0; FRAME_SAMPLES]),
            work: Box::new([0.0; FRAME_SAMPLES]),
            scratch: Box::new([0; MAX_OPUS_PACKET]),
            captures: Vec::new(),
            last_program: Box::new([0.0; FRAME_SAMPLES]),
            this_program: Box::new([0.0; FRAME_SAMPLES]),
            pre_skip: u16::try_from(lookahead).unwrap_or(312),
            work_done: MixerWork::default(),
        })
    }

    /// Numbers the next program frame `seq` (+1 per tick from there): a space taken over from
    /// another origin goes on with its program clock ([`crate::ProgramClock`]) instead of
    /// starting at 0.
    pub fn start_at(&mut self, seq: u32) {
        self.program.seq = seq;
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
            can_conceal: false,
            muted: false,
            peak: 0.0,
            capture_us: None,
            quiet_ticks: u32::MAX,
            ret: if wants_return {
                Some(Output::new(&self.cfg, self.cfg.return_complexity)?)
            } else {
                None
            },
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

    /// Mutes or unmutes a speaker. A muted speaker's frames are played out of their jitter
    /// buffer but not decoded; on unmuting, decoding starts afresh.
    pub fn set_muted(&mut self, id: SourceId, muted: bool) -> bool {
        let Some(source) = self.sources.get_mut(&id) else {
            return false;
        };
        if source.muted && !muted {
            // The decoder's memory is of speech from before the mute: start clean.
            let _ = source.decoder.reset_state();
        }
        source.muted = muted;
        true
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

    /// Decodes and encodes done so far.
    pub fn work(&self) -> MixerWork {
        self.work_done
    }

    /// Mixes one 20 ms frame at wall-clock time `now_us` (µs since the epoch).
    pub fn tick(&mut self, now_us: u64) -> Tick {
        self.mix.fill(0.0);
        let mut oldest_capture: Option<u64> = None;
        for source in self.sources.values_mut() {
            source.decode_next();
            if source.active {
                self.work_done.decodes += 1;
                for (m, s) in self.mix.iter_mut().zip(source.pcm.iter()) {
                    *m += *s;
                }
                oldest_capture = min_opt(oldest_capture, source.capture_us);
            }
        }
        self.work.copy_from_slice(&self.mix[..]);
        let program =
            self.program.encode(&mut self.work, &mut self.scratch, now_us, oldest_capture);
        self.this_program.copy_from_slice(&self.work[..]);
        self.captures.clear();
        self.captures.extend(
            self.sources.iter().map(|(id, s)| (*id, if s.active { s.capture_us } else { None })),
        );
        let mut returns = Vec::with_capacity(self.sources.len());
        for (id, source) in self.sources.iter_mut() {
            let Some(ret) = source.ret.as_mut() else {
                continue;
            };
            if source.quiet_ticks > RETURN_HANGOVER_TICKS {
                ret.warm = false;
                self.work_done.program_returns += 1;
                returns.push((*id, Return::Program));
                continue;
            }
            if !ret.warm {
                ret.prime(&self.last_program, &mut self.scratch);
                self.work_done.return_encodes += 1;
            }
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
            // A return keeps the program's numbering: switching between the two is seamless.
            ret.seq = program.seq;
            let frame = ret.encode(&mut self.work, &mut self.scratch, now_us, others);
            self.work_done.return_encodes += 1;
            returns.push((*id, Return::MixMinus(frame)));
        }
        std::mem::swap(&mut self.last_program, &mut self.this_program);
        Tick { program, returns }
    }
}

impl Source {
    /// Decodes this tick's frame (or conceals it) into `pcm` when it holds audio; sets `active`,
    /// `peak` and how long the speaker has been quiet.
    fn decode_next(&mut self) {
        self.active = false;
        self.peak = 0.0;
        self.quiet_ticks = self.quiet_ticks.saturating_add(1);
        let (input, capture) = match self.jitter.pop() {
            Playout::Frame(f) if !self.muted && f.payload.len() > DTX_MAX_BYTES => {
                (f.payload, (f.sent_at_us != 0).then_some(f.sent_at_us))
            }
            // Concealing after silence would make up sound from before it.
            Playout::Conceal if !self.muted && self.can_conceal => (Bytes::new(), None),
            // Muted, DTX, nothing sent: no audio, no decoding.
            Playout::Frame(_) | Playout::Conceal | Playout::Idle => {
                self.can_conceal = false;
                return;
            }
        };
        let decoded = self.decoder.decode_float(&input, &mut self.pcm[..], false);
        let samples = match decoded {
            Ok(n) => n.min(FRAME_SAMPLES),
            // A packet libopus rejects is concealed instead.
            Err(_) => self.decoder.decode_float(&[], &mut self.pcm[..], false).unwrap_or(0),
        };
        self.pcm[samples..].fill(0.0);
        self.capture_us = capture;
        self.active = true;
        self.can_conceal = true;
        self.peak = self.pcm.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        if self.peak >= SILENT_PEAK {
            self.quiet_ticks = 0;
        }
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
            self.encoded(&pcm, sent_at_us)
        }

        /// Encoded digital silence, as a client with an open microphone and no DTX sends.
        fn silence(&mut self, sent_at_us: u64) -> SpeakerFrame {
            self.encoded(&[0.0; FRAME_SAMPLES], sent_at_us)
        }

        /// A DTX frame: the table of contents alone, no audio.
        fn dtx(&mut self, sent_at_us: u64) -> SpeakerFrame {
            self.seq += 1;
            SpeakerFrame { seq: self.seq, sent_at_us, payload: Bytes::from_static(&[0xF8]) }
        }

        fn encoded(&mut self, pcm: &[f32; FRAME_SAMPLES], sent_at_us: u64) -> SpeakerFrame {
            let payload = self.enc.encode_vec_float(pcm, 1275).expect("encode");
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
    fn a_mixer_started_at_a_number_goes_on_from_it() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.start_at(u32::MAX - 1);
        mixer.add_source(1, true).expect("add");
        let ticks = run(&mut mixer, &mut [(1, Bot::new(440.0, 0.5))], 3);
        let seqs: Vec<u32> = ticks.iter().map(|t| t.program.seq).collect();
        assert_eq!(seqs, [u32::MAX - 1, u32::MAX, 0], "+1 a tick from there, wrapping");
        for t in &ticks {
            for (_, frame) in t.return_frames() {
                assert_eq!(frame.seq, t.program.seq, "returns keep the program's numbers");
            }
        }
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
            for (id, frame) in t.return_frames() {
                if id == 1 { ret1.hear(frame) } else { ret2.hear(frame) }
            }
        }
        assert!(tone_amplitude(program.tail(), 440.0) > 0.15);
        assert!(tone_amplitude(program.tail(), 660.0) > 0.15);
        assert!(tone_amplitude(ret1.tail(), 440.0) < 0.03, "speaker 1 hears itself");
        assert!(tone_amplitude(ret1.tail(), 660.0) > 0.15, "speaker 1 misses speaker 2");
        assert!(tone_amplitude(ret2.tail(), 660.0) < 0.03, "speaker 2 hears itself");
        assert!(tone_amplitude(ret2.tail(), 440.0) > 0.15, "speaker 2 misses speaker 1");
    }

    /// What one speaker sends in one tick.
    #[derive(Clone, Copy, PartialEq)]
    enum Says {
        Tone,
        Silence,
        Dtx,
        Nothing,
    }

    /// One tick: each bot sends what `says` tells it, then the mixer ticks.
    fn step(mixer: &mut Mixer, bots: &mut [(SourceId, Bot)], t: u64, says: &[Says]) -> Tick {
        let now = 1_000_000 + t * 20_000;
        for ((id, bot), what) in bots.iter_mut().zip(says) {
            let frame = match what {
                Says::Tone => bot.frame(now - 5_000),
                Says::Silence => bot.silence(now - 5_000),
                Says::Dtx => bot.dtx(now - 5_000),
                Says::Nothing => continue,
            };
            assert!(mixer.push(*id, frame));
        }
        mixer.tick(now)
    }

    fn ret(tick: &Tick, id: SourceId) -> &Return {
        &tick.returns.iter().find(|(i, _)| *i == id).expect("a return").1
    }

    #[test]
    fn silent_speakers_hear_the_program_itself_and_talkers_a_mix_minus() {
        use Says::*;
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        for id in 1..=4 {
            mixer.add_source(id, true).expect("add");
        }
        let mut bots: Vec<(SourceId, Bot)> = vec![
            (1, Bot::new(440.0, 0.3)),
            (2, Bot::new(660.0, 0.3)),
            (3, Bot::new(880.0, 0.3)),
            (4, Bot::new(990.0, 0.3)),
        ];
        let says = [Tone, Tone, Silence, Nothing];
        let (mut program, mut ret1) = (Ear::new(), Ear::new());
        let (mut silent_ear, mut program_ear) = (Ear::new(), Ear::new());
        for t in 0..100 {
            let tick = step(&mut mixer, &mut bots, t, &says);
            program.hear(&tick.program);
            let frames: BTreeMap<SourceId, &ProgramFrame> = tick.return_frames().collect();
            ret1.hear(frames[&1]);
            for id in [3, 4] {
                assert_eq!(ret(&tick, id), &Return::Program, "tick {t}: {id} is silent");
                let frame = frames[&id];
                assert_eq!(frame, &tick.program, "tick {t}: exactly the program");
                assert_eq!(frame.payload.as_ptr(), tick.program.payload.as_ptr(), "same buffer");
            }
            silent_ear.hear(frames[&3]);
            program_ear.hear(&tick.program);
            if t >= 3 {
                // Speakers 1 and 2 play out from the third tick (the jitter buffer's depth).
                for id in [1, 2] {
                    let Return::MixMinus(frame) = ret(&tick, id) else {
                        panic!("tick {t}: {id} talks and needs a mix-minus");
                    };
                    assert_eq!(frame.seq, tick.program.seq, "a return keeps the program's seq");
                    assert_ne!(frame.payload, tick.program.payload);
                }
            }
        }
        assert!(tone_amplitude(program.tail(), 440.0) > 0.15);
        assert!(tone_amplitude(program.tail(), 660.0) > 0.15);
        assert!(tone_amplitude(ret1.tail(), 440.0) < 0.03, "speaker 1 hears itself");
        assert!(tone_amplitude(ret1.tail(), 660.0) > 0.15, "speaker 1 misses speaker 2");
        assert_eq!(silent_ear.pcm, program_ear.pcm, "a silent speaker hears the program");
        assert!(tone_amplitude(silent_ear.tail(), 440.0) > 0.15);
    }

    #[test]
    fn a_speaker_who_pauses_hears_the_program_then_a_mix_minus_again() {
        use Says::*;
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, true).expect("add");
        mixer.add_source(2, false).expect("add");
        let mut bots = vec![(1, Bot::new(440.0, 0.3)), (2, Bot::new(660.0, 0.3))];
        let mut ear = Ear::new();
        let mut heard = Vec::new();
        let mut seqs = Vec::new();
        for t in 0..300 {
            let one = if (100..200).contains(&t) { Silence } else { Tone };
            let tick = step(&mut mixer, &mut bots, t, &[one, Tone]);
            let (_, frame) = tick.return_frames().next().expect("speaker 1's return");
            ear.hear(frame);
            seqs.push(frame.seq);
            heard.push(matches!(ret(&tick, 1), Return::Program));
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "one numbering across the switches");
        // The jitter buffer delays playout by two ticks: nothing to hear back before tick 2, the
        // pause plays from tick 102 (its first frames still decode the tone's last few ms), the
        // tone again from 202. The hangover holds the mix-minus 15 ticks into the pause.
        let switches: Vec<usize> = (1..heard.len()).filter(|&i| heard[i] != heard[i - 1]).collect();
        assert_eq!(switches.len(), 3, "{switches:?}");
        assert_eq!((switches[0], switches[2]), (2, 202));
        let hangover = RETURN_HANGOVER_TICKS as usize;
        assert!((102 + hangover..=105 + hangover).contains(&switches[1]), "{switches:?}");
        let window = |from: usize, to: usize| &ear.pcm[from * FRAME_SAMPLES..to * FRAME_SAMPLES];
        // While talking, before and after the pause: never their own tone, always the other.
        for (from, to) in [(50, 100), (250, 300)] {
            assert!(tone_amplitude(window(from, to), 440.0) < 0.03, "{from}..{to}: hears itself");
            assert!(tone_amplitude(window(from, to), 660.0) > 0.15, "{from}..{to}: misses 2");
        }
        // During the pause, the program: the other speaker.
        assert!(tone_amplitude(window(150, 200), 660.0) > 0.15);
        let work = mixer.work();
        assert_eq!(work.program_returns, (2 + 202 - switches[1]) as u64);
        // One encode a tick while talking, and one to prime the encoder when talk resumed.
        assert_eq!(work.return_encodes, 300 - work.program_returns + 2);
    }

    #[test]
    fn only_speakers_who_sent_audio_are_decoded() {
        use Says::*;
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        let mut bots: Vec<(SourceId, Bot)> =
            (1..=4).map(|id| (id, Bot::new(300.0 + 100.0 * id as f32, 0.3))).collect();
        for (id, _) in &bots {
            mixer.add_source(*id, true).expect("add");
        }
        mixer.set_muted(4, true);
        let says = [Tone, Dtx, Nothing, Tone];
        for t in 0..10 {
            step(&mut mixer, &mut bots, t, &says);
        }
        let before = mixer.work();
        for t in 10..60 {
            step(&mut mixer, &mut bots, t, &says);
        }
        let work = mixer.work();
        // Only speaker 1: 2 sends DTX, 3 nothing, 4 is muted.
        assert_eq!(work.decodes - before.decodes, 50);
        assert_eq!(work.return_encodes - before.return_encodes, 50, "one mix-minus, for 1");
        assert_eq!(work.program_returns - before.program_returns, 150);
        // Unmuted, speaker 4 is decoded and heard again.
        mixer.set_muted(4, false);
        let mut ear = Ear::new();
        for t in 60..110 {
            ear.hear(&step(&mut mixer, &mut bots, t, &says).program);
        }
        assert!(tone_amplitude(ear.tail(), 700.0) > 0.15, "speaker 4 back");
        assert_eq!(mixer.work().decodes - work.decodes, 100);
    }

    #[test]
    fn a_lost_frame_after_a_pause_is_not_concealed_from_old_speech() {
        let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
        mixer.add_source(1, false).expect("add");
        let mut bot = Bot::new(440.0, 0.5);
        let mut ear = Ear::new();
        for t in 0..100u64 {
            let frame = match t {
                0..50 => bot.frame(0),
                _ => bot.dtx(0),
            };
            // Frames 70 to 72 are lost: the buffer conceals them.
            if !(70..73).contains(&t) {
                mixer.push(1, frame);
            }
            ear.hear(&mixer.tick(t * 20_000).program);
        }
        assert_eq!(mixer.source_stats(1).expect("stats").concealed, 3);
        let after_pause = &ear.pcm[60 * FRAME_SAMPLES..];
        assert!(tone_amplitude(after_pause, 440.0) < 0.001, "old speech made up again");
        assert!(crate::analysis::rms(after_pause) < 0.001);
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
