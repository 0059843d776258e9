//! What one mixer tick costs: a full stage of 13 speakers, every one asking for a mix-minus,
//! with all of them talking (the worst case) and with one or two talking while the others send
//! encoded silence (the common case). Frames are encoded before timing starts, so a measured
//! tick is what a space's mixer thread does every 20 ms: queue one frame per speaker, decode,
//! mix, and encode the program and the returns.
//!
//! `cargo bench -p townhall-media --bench mixer` (add `-- --quick` for a fast pass). A tick's
//! time divided by 20 ms is the share of a core one such space takes.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use townhall_media::analysis::ToneGenerator;
use townhall_media::{FRAME_SAMPLES, Mixer, MixerConfig, SAMPLE_RATE, SpeakerFrame};

/// Speakers on a full stage.
const STAGE: u64 = 13;
/// Distinct frames encoded per speaker, looped (one second).
const FRAMES: usize = 50;

/// One speaker's pre-encoded second: a tone (talking) or encoded digital silence, as a browser
/// with an open microphone and no DTX sends between words.
fn speaker_frames(n: u64, talking: bool) -> Vec<Bytes> {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
        .expect("encoder");
    let mut tone = ToneGenerator::new(300.0 + 40.0 * n as f32, 0.3);
    (0..FRAMES)
        .map(|_| {
            let pcm = if talking { tone.next_frame() } else { [0.0; FRAME_SAMPLES] };
            Bytes::from(enc.encode_vec_float(&pcm, 1275).expect("encode"))
        })
        .collect()
}

/// A mixer with a full stage, `talking` of them sending a tone, warmed up past its jitter
/// buffers' start.
fn stage(talking: u64) -> (Mixer, Vec<Vec<Bytes>>, u32) {
    let mut mixer = Mixer::new(MixerConfig::default()).expect("mixer");
    let frames: Vec<Vec<Bytes>> = (0..STAGE).map(|n| speaker_frames(n, n < talking)).collect();
    for id in 0..STAGE {
        mixer.add_source(id, true).expect("add");
    }
    let mut seq = 0;
    for _ in 0..FRAMES {
        push_all(&mut mixer, &frames, seq);
        black_box(mixer.tick(u64::from(seq) * 20_000));
        seq += 1;
    }
    (mixer, frames, seq)
}

fn push_all(mixer: &mut Mixer, frames: &[Vec<Bytes>], seq: u32) {
    for (id, mine) in frames.iter().enumerate() {
        let payload = mine[seq as usize % FRAMES].clone();
        mixer.push(id as u64, SpeakerFrame { seq, sent_at_us: 1, payload });
    }
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick_13_speakers");
    for talking in [13, 2, 1, 0] {
        let (mut mixer, frames, mut seq) = stage(talking);
        group.bench_function(BenchmarkId::new("talking", talking), |b| {
            b.iter(|| {
                push_all(&mut mixer, &frames, seq);
                let tick = mixer.tick(u64::from(seq) * 20_000);
                seq += 1;
                black_box(tick)
            })
        });
    }
    group.finish();
}

/// One mix encoded at each complexity: what a return (or the program) costs by setting.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_mix");
    let mut tones: Vec<ToneGenerator> =
        (0..3).map(|n| ToneGenerator::new(300.0 + 170.0 * n as f32, 0.2)).collect();
    let pcm: Vec<[f32; FRAME_SAMPLES]> = (0..FRAMES)
        .map(|_| {
            let mut mix = [0.0f32; FRAME_SAMPLES];
            for tone in &mut tones {
                for (m, s) in mix.iter_mut().zip(tone.next_frame()) {
                    *m += s;
                }
            }
            mix
        })
        .collect();
    for complexity in [0, 2, 4, 5, 6, 8, 10] {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("encoder");
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).expect("bitrate");
        enc.set_complexity(complexity).expect("complexity");
        enc.set_signal(opus::Signal::Voice).expect("signal");
        let mut out = [0u8; 1275];
        let mut i = 0;
        group.bench_function(BenchmarkId::new("complexity", complexity), |b| {
            b.iter(|| {
                i = (i + 1) % FRAMES;
                black_box(enc.encode_float(&pcm[i], &mut out).expect("encode"))
            })
        });
    }
    group.finish();
}

// The macro's generated function cannot carry a doc comment.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
        name = benches;
        config = Criterion::default()
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        targets = tick, encode
    }
}
criterion_main!(group::benches);
