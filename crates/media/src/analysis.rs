//! Signal measurement and synthesis: tone generation and detection, levels.
//!
//! Used by tests to check that audio survived the whole path, by test bots that speak a known
//! tone, and by the load generator.

use std::f32::consts::TAU;

use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// A sine wave generator that keeps its phase across frames.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    step: f32,
    phase: f32,
    amplitude: f32,
}

impl ToneGenerator {
    /// A tone of `freq_hz` at `amplitude` (0.0 to 1.0) at 48 kHz.
    pub fn new(freq_hz: f32, amplitude: f32) -> ToneGenerator {
        ToneGenerator { step: TAU * freq_hz / SAMPLE_RATE as f32, phase: 0.0, amplitude }
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [f32]) {
        for s in out {
            *s = self.amplitude * self.phase.sin();
            self.phase = (self.phase + self.step) % TAU;
        }
    }

    /// The next 20 ms frame.
    pub fn next_frame(&mut self) -> [f32; FRAME_SAMPLES] {
        let mut frame = [0.0; FRAME_SAMPLES];
        self.fill(&mut frame);
        frame
    }
}

/// Amplitude of the sinusoid at `freq_hz` in `samples` (48 kHz), by the Goertzel algorithm.
/// A pure tone of amplitude `a` at that frequency measures close to `a`.
pub fn tone_amplitude(samples: &[f32], freq_hz: f32) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = TAU * freq_hz / SAMPLE_RATE as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + f64::from(coeff) * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - f64::from(coeff) * s1 * s2;
    (2.0 * power.max(0.0).sqrt() / samples.len() as f64) as f32
}

/// Root-mean-square level of `samples`.
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_generated_tone_and_not_others() {
        let mut tone = ToneGenerator::new(440.0, 0.5);
        let mut samples = vec![0.0; SAMPLE_RATE as usize / 2];
        tone.fill(&mut samples);
        let at = tone_amplitude(&samples, 440.0);
        assert!((at - 0.5).abs() < 0.02, "amplitude at 440 Hz: {at}");
        assert!(tone_amplitude(&samples, 880.0) < 0.01);
        assert!((rms(&samples) - 0.5 / 2f32.sqrt()).abs() < 0.01);
    }
}
