//! CMAF (fragmented MP4) packaging of the program stream for HLS: an init segment with an Opus
//! sample entry (`Opus` + `dOps`), and fragments (`moof` + `mdat`) of consecutive 20 ms packets.
//! Boxes come from the `mp4-atom` crate; this module only decides what goes in them.

use bytes::Bytes;
use mp4_atom::{
    Audio, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Matrix, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov,
    Mvex, Mvhd, Opus, Smhd, Stbl, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry,
    TrunSamples, Url,
};

use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// The one track's id.
const TRACK: u32 = 1;
/// Sample flags of an audio sample: depends on no other (`sample_depends_on` = 2).
const SYNC_SAMPLE: u32 = 0x0200_0000;

/// Why packaging failed (only with inputs no caller should produce).
#[derive(Debug, thiserror::Error)]
#[error("mp4: {0}")]
pub struct CmafError(String);

fn encode(boxes: &[&dyn EncodeBox]) -> Result<Bytes, CmafError> {
    let mut out = Vec::new();
    for b in boxes {
        b.encode_into(&mut out)?;
    }
    Ok(Bytes::from(out))
}

/// Boxes of different types, encoded in turn.
trait EncodeBox {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CmafError>;
}

impl<T: Encode> EncodeBox for T {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CmafError> {
        self.encode(out).map_err(|e| CmafError(e.to_string()))
    }
}

/// The init segment: `ftyp` and a `moov` describing one mono Opus track at 48 kHz.
pub fn init_segment(pre_skip: u16) -> Result<Bytes, CmafError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"Opus".into()],
    };
    let opus = Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: 1,
            sample_size: 16,
            sample_rate: 48_000u16.into(),
        },
        dops: Dops {
            output_channel_count: 1,
            pre_skip,
            input_sample_rate: SAMPLE_RATE,
            output_gain: 0,
            channel_mapping: None,
        },
        btrt: None,
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: SAMPLE_RATE,
            rate: 1.into(),
            volume: 1.into(),
            matrix: Matrix::default(),
            next_track_id: TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK,
                default_sample_description_index: 1,
                default_sample_duration: FRAME_SAMPLES as u32,
                default_sample_size: 0,
                default_sample_flags: SYNC_SAMPLE,
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: TRACK,
                enabled: true,
                in_movie: true,
                volume: 1.into(),
                matrix: Matrix::default(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd { timescale: SAMPLE_RATE, language: "und".into(), ..Default::default() },
                hdlr: Hdlr { handler: b"soun".into(), name: "Townhall program".into() },
                minf: Minf {
                    smhd: Some(Smhd { balance: 0.into() }),
                    dinf: Dinf { dref: Dref { entries: vec![Url { location: "".into() }.into()] } },
                    stbl: Stbl { stsd: Stsd { codecs: vec![opus.into()] }, ..Default::default() },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    encode(&[&ftyp, &moov])
}

/// Writes fragments of consecutive 20 ms packets, numbering them and keeping decode time.
#[derive(Debug, Clone, Default)]
pub struct FragmentWriter {
    sequence: u32,
    decode_time: u64,
}

impl FragmentWriter {
    /// A writer whose first fragment starts at decode time `start` (48 kHz units).
    pub fn new(start: u64) -> FragmentWriter {
        FragmentWriter { sequence: 0, decode_time: start }
    }

    /// A writer whose next fragment is number `sequence` (≥ 1) and starts at decode time
    /// `start` (48 kHz units): a stream joined in the middle numbers as the stream does.
    pub fn at(sequence: u32, start: u64) -> FragmentWriter {
        FragmentWriter { sequence: sequence.saturating_sub(1), decode_time: start }
    }

    /// Decode time of the next fragment, 48 kHz units.
    pub fn decode_time(&self) -> u64 {
        self.decode_time
    }

    /// One fragment (`moof` + `mdat`) holding `packets`, each 20 ms.
    pub fn fragment(&mut self, packets: &[Bytes]) -> Result<Bytes, CmafError> {
        self.sequence += 1;
        let entries = packets
            .iter()
            .map(|p| TrunEntry { size: Some(p.len() as u32), ..Default::default() })
            .collect();
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: self.sequence },
            traf: vec![Traf {
                tfhd: Tfhd {
                    track_id: TRACK,
                    default_sample_duration: Some(FRAME_SAMPLES as u32),
                    default_sample_flags: Some(SYNC_SAMPLE),
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt { base_media_decode_time: self.decode_time }),
                trun: vec![Trun { data_offset: Some(0), samples: TrunSamples::Explicit(entries) }],
                ..Default::default()
            }],
        };
        // The data offset counts from the start of the moof to the first sample in the mdat.
        let moof_len = encode(&[&moof])?.len();
        if let Some(trun) = moof.traf[0].trun.first_mut() {
            trun.data_offset = Some((moof_len + 8) as i32);
        }
        let mdat = Mdat { data: packets.iter().flat_map(|p| p.iter().copied()).collect() };
        self.decode_time += (packets.len() * FRAME_SAMPLES) as u64;
        encode(&[&moof, &mdat])
    }
}
