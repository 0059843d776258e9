//! CMAF segments decode in an independent implementation: ffmpeg reads the init segment and
//! fragments we write and hears the tone we encoded.

use std::process::Command;

use bytes::Bytes;
use townhall_media::analysis::{ToneGenerator, tone_amplitude};
use townhall_media::cmaf::{FragmentWriter, init_segment};
use townhall_media::{FRAME_SAMPLES, SAMPLE_RATE};

#[test]
fn ffmpeg_decodes_our_fragments_to_the_tone_we_encoded() {
    for tool in ["ffprobe", "ffmpeg"] {
        let ok = Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} not found: install Debian's ffmpeg package");
    }
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
        .expect("encoder");
    let pre_skip = enc.get_lookahead().expect("lookahead") as u16;
    let mut tone = ToneGenerator::new(440.0, 0.4);
    let packets: Vec<Bytes> = (0..150)
        .map(|_| Bytes::from(enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode")))
        .collect();
    let mut file = init_segment(pre_skip).expect("init").to_vec();
    let mut writer = FragmentWriter::new(0);
    for chunk in packets.chunks(10) {
        file.extend_from_slice(&writer.fragment(chunk).expect("fragment"));
    }
    assert_eq!(writer.decode_time(), 150 * FRAME_SAMPLES as u64);

    let dir = std::env::temp_dir().join(format!("townhall-cmaf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("stream.mp4");
    std::fs::write(&path, &file).expect("write");
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,channels,sample_rate",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let info = String::from_utf8_lossy(&probe.stdout);
    assert!(info.contains("\"codec_name\": \"opus\""), "ffprobe: {info}");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let pcm: Vec<f32> =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let expected = 150 * FRAME_SAMPLES - pre_skip as usize;
    assert!(
        pcm.len().abs_diff(expected) < FRAME_SAMPLES,
        "decoded {} samples, expected ~{expected}",
        pcm.len()
    );
    let amp = tone_amplitude(&pcm[pcm.len() / 2..], 440.0);
    assert!(amp > 0.3, "440 Hz at {amp}");
    let _ = std::fs::remove_dir_all(&dir);
}
