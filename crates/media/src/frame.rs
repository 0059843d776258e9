//! The unit of audio: one 20 ms Opus frame at 48 kHz.

/// Opus always runs at 48 kHz internally; Townhall uses it end to end.
pub const SAMPLE_RATE: u32 = 48_000;
/// The program stream is mono (speech).
pub const CHANNELS: usize = 1;
/// Duration of one frame and of one mixer tick.
pub const FRAME_MS: u32 = 20;
/// Samples per channel in one frame (20 ms at 48 kHz).
pub const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
/// The largest Opus packet RFC 6716 allows for one frame.
pub const MAX_OPUS_PACKET: usize = 1275;

/// Why a payload is not an acceptable Opus frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Empty, or larger than an Opus packet can be.
    #[error("opus packet must be 1 to {MAX_OPUS_PACKET} bytes, got {0}")]
    Size(usize),
    /// libopus could not parse the packet's table of contents.
    #[error("not a valid opus packet")]
    NotOpus,
    /// A valid packet, but not 20 ms of audio.
    #[error("opus packet holds {0} samples; frames must be 20 ms (960 samples at 48 kHz)")]
    Duration(usize),
}

/// Checks that `packet` is a well-formed Opus packet of exactly 20 ms, without decoding it.
pub fn check_opus_frame(packet: &[u8]) -> Result<(), FrameError> {
    if packet.is_empty() || packet.len() > MAX_OPUS_PACKET {
        return Err(FrameError::Size(packet.len()));
    }
    opus::packet::parse(packet).map_err(|_| FrameError::NotOpus)?;
    let samples =
        opus::packet::get_nb_samples(packet, SAMPLE_RATE).map_err(|_| FrameError::NotOpus)?;
    if samples != FRAME_SAMPLES {
        return Err(FrameError::Duration(samples));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded_frame() -> Vec<u8> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("encoder");
        enc.encode_vec_float(&[0.1; FRAME_SAMPLES], 1275).expect("encode")
    }

    #[test]
    fn real_frames_pass() {
        assert_eq!(check_opus_frame(&encoded_frame()), Ok(()));
    }

    #[test]
    fn wrong_durations_and_sizes_fail() {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .expect("encoder");
        let ten_ms = enc.encode_vec_float(&[0.1; FRAME_SAMPLES / 2], 1275).expect("encode");
        assert_eq!(check_opus_frame(&ten_ms), Err(FrameError::Duration(480)));
        assert_eq!(check_opus_frame(&[]), Err(FrameError::Size(0)));
        assert_eq!(check_opus_frame(&[0u8; 1276]), Err(FrameError::Size(1276)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = check_opus_frame(&bytes);
        }
    }
}
