//! 48 kHz float (the program) to 16 kHz signed 16-bit (what speech engines take): a low-pass
//! windowed-sinc filter below the new Nyquist frequency, then one sample in three. Keeps its
//! history between calls, so frames of any length can follow each other seamlessly.

/// Filter length (odd: symmetric around its centre).
const TAPS: usize = 33;
/// Input samples per output sample.
const FACTOR: usize = 3;

/// A streaming 3:1 decimator.
#[derive(Debug, Clone)]
pub struct Downsampler {
    coeffs: [f32; TAPS],
    /// The last `TAPS - 1` input samples, then the new ones.
    history: Vec<f32>,
}

impl Default for Downsampler {
    fn default() -> Self {
        Downsampler::new()
    }
}

impl Downsampler {
    /// A decimator from 48 kHz to 16 kHz.
    pub fn new() -> Downsampler {
        // Cut-off at 7.2 kHz (0.15 of 48 kHz), Hamming window, unity gain at DC.
        let fc = 0.15f64;
        let mid = (TAPS / 2) as f64;
        let mut coeffs = [0f32; TAPS];
        let mut sum = 0f64;
        let mut raw = [0f64; TAPS];
        for (i, c) in raw.iter_mut().enumerate() {
            let x = i as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let window =
                0.54 - 0.46 * (2.0 * std::f64::consts::PI * i as f64 / (TAPS - 1) as f64).cos();
            *c = sinc * window;
            sum += *c;
        }
        for (c, r) in coeffs.iter_mut().zip(raw) {
            *c = (r / sum) as f32;
        }
        Downsampler { coeffs, history: vec![0.0; TAPS - 1] }
    }

    /// Filters `input` (48 kHz, -1.0 to 1.0) and appends the 16 kHz samples to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<i16>) {
        self.history.extend_from_slice(input);
        let mut start = 0;
        while start + TAPS <= self.history.len() {
            let window = &self.history[start..start + TAPS];
            let acc: f32 = window.iter().zip(self.coeffs.iter()).map(|(s, c)| s * c).sum();
            out.push((acc.clamp(-1.0, 1.0) * 32767.0) as i16);
            start += FACTOR;
        }
        // Keep what the next windows need.
        let keep_from = start.min(self.history.len());
        self.history.drain(..keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, n: usize, amplitude: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / 48_000.0).sin())
            .collect()
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|&s| (s as f32 / 32768.0).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn a_third_of_the_samples_speech_band_kept_and_above_nyquist_gone() {
        let mut d = Downsampler::new();
        let mut out = Vec::new();
        // 50 frames of 20 ms, as the mixer hands them.
        let speech = tone(1_000.0, 48_000, 0.5);
        for frame in speech.chunks(960) {
            d.push(frame, &mut out);
        }
        assert!((out.len() as i64 - 16_000).abs() <= 11, "{}", out.len());
        let level = rms(&out[1_000..]);
        assert!((level - 0.5 / 2f32.sqrt()).abs() < 0.02, "1 kHz passes: {level}");
        let mut d = Downsampler::new();
        let mut high = Vec::new();
        d.push(&tone(12_000.0, 48_000, 0.5), &mut high);
        assert!(rms(&high[1_000..]) < 0.01, "12 kHz would alias: it is filtered out");
    }

    #[test]
    fn frames_of_any_length_give_the_same_stream() {
        let input = tone(440.0, 9_600, 0.3);
        let mut whole = Vec::new();
        Downsampler::new().push(&input, &mut whole);
        let mut pieces = Vec::new();
        let mut d = Downsampler::new();
        for chunk in input.chunks(77) {
            d.push(chunk, &mut pieces);
        }
        assert_eq!(whole, pieces);
    }
}
