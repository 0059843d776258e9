//! Clips decode in an independent implementation: ffmpeg decodes exactly the length we meant
//! and the tone we encoded, and ffprobe reports the length within a page (it counts the
//! pre-skip in: 80 ms and less than a packet more), for a clip from the middle of a recording
//! (pre-skip and end trimming doing the exact cut) and one from its start.

use std::process::Command;

use bytes::Bytes;
use townhall_media::SAMPLE_RATE;
use townhall_media::analysis::{ToneGenerator, tone_amplitude};
use townhall_media::clip::{ClipSpec, ClipTags, cut};
use townhall_media::recording::{RecordingTags, RecordingWriter, WriterConfig};

/// The longest page of the source: half a second, as the recorder writes them.
const PAGE_SECS: f64 = 0.5;

/// Ten seconds of a 440 Hz tone recorded as the recorder does (pages of up to 25 frames).
fn recording() -> Vec<u8> {
    let mut enc = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
        .expect("encoder");
    let pre_skip = enc.get_lookahead().expect("lookahead") as u16;
    let tags = RecordingTags {
        title: "Source".into(),
        space: "s".into(),
        recording: "s-1-00".into(),
        started_at: 1,
    };
    let config = WriterConfig { sync_interval_ms: 1_000, page_frames: 25 };
    let (mut w, mut file) = RecordingWriter::new(1, pre_skip, &tags, config, 0).expect("writer");
    let mut tone = ToneGenerator::new(440.0, 0.4);
    for i in 0..500u32 {
        let pkt = enc.encode_vec_float(&tone.next_frame(), 1275).expect("encode");
        file.extend(w.push(i, Bytes::from(pkt), u64::from(i) * 20).expect("push").bytes);
    }
    file.extend(w.finish().expect("finish"));
    file
}

fn probe_and_decode(bytes: &[u8], name: &str) -> (f64, String, Vec<f32>) {
    let dir = std::env::temp_dir().join(format!("townhall-clip-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("clip.opus");
    std::fs::write(&path, bytes).expect("write");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration:stream_tags", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
    let info = String::from_utf8_lossy(&probe.stdout).into_owned();
    let duration = info
        .split("\"duration\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no duration in {info}"));
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let pcm =
        out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (duration, info, pcm)
}

#[test]
fn ffmpeg_decodes_clips_to_their_length_and_the_tone() {
    for tool in ["ffprobe", "ffmpeg"] {
        let ok = Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} not found: install Debian's ffmpeg package");
    }
    let source = recording();
    for (name, from_ms, to_ms) in [("middle", 3_030, 8_010), ("start", 0, 2_000)] {
        let tags = ClipTags {
            title: format!("Clip {name}"),
            space: "s".into(),
            clip: "0123456789abcdef".into(),
            recording: Some("s-1-00".into()),
            created_at: 1_767_225_600,
        };
        let spec =
            ClipSpec { from_ms, to_ms, serial: 42, comments: tags.comments(), max_bytes: 1 << 20 };
        let clip = cut(&source, spec).expect("cut");
        let want = (to_ms - from_ms) as f64 / 1_000.0;
        assert_eq!(clip.duration_ms(), to_ms - from_ms, "{name}");
        let (probed, info, pcm) = probe_and_decode(&clip.bytes, name);
        assert!(
            (probed - want).abs() <= PAGE_SECS,
            "{name}: ffprobe says {probed} s, not {want} s"
        );
        let decoded = pcm.len() as f64 / f64::from(SAMPLE_RATE);
        assert!(
            (decoded - want).abs() <= PAGE_SECS,
            "{name}: ffmpeg decodes {decoded} s, not {want} s"
        );
        assert_eq!(pcm.len() as u64, (to_ms - from_ms) * 48, "{name}: exact to the sample");
        assert!(info.contains(&format!("Clip {name}")), "{name}: the title is not in {info}");
        let amp = tone_amplitude(&pcm[pcm.len() / 4..], 440.0);
        assert!(amp > 0.3, "{name}: 440 Hz at {amp}");
        // From its first sample: the pre-roll the decoder needed is not heard.
        let head = tone_amplitude(&pcm[..4_800], 440.0);
        assert!(head > 0.3, "{name}: the first 100 ms are at {head}");
        eprintln!("{name}: asked {want} s, ffprobe {probed} s, ffmpeg {decoded} s");
    }
}
