// The binary WebSocket formats (big-endian); see crates/media/src/wire.rs.

export const KIND_SPEAKER_FRAME = 0x01;
export const KIND_PROGRAM_BATCH = 0x02;
const FRAME_HEADER = 18;

/**
 * Parses a program batch: calls `each({seq, mixedAtUs, captureAgeUs, payload})` per frame.
 * Returns the number of frames, or throws on a malformed message.
 */
export function parseProgramBatch(buffer, each) {
  const view = new DataView(buffer);
  if (view.byteLength < 2 || view.getUint8(0) !== KIND_PROGRAM_BATCH) throw new Error('not a program batch');
  const count = view.getUint8(1);
  let pos = 2;
  for (let i = 0; i < count; i++) {
    if (pos + FRAME_HEADER > view.byteLength) throw new Error('truncated batch');
    const seq = view.getUint32(pos);
    const mixedAtUs = view.getUint32(pos + 4) * 2 ** 32 + view.getUint32(pos + 8);
    const captureAgeUs = view.getUint32(pos + 12);
    const len = view.getUint16(pos + 16);
    pos += FRAME_HEADER;
    if (pos + len > view.byteLength) throw new Error('truncated frame');
    each({ seq, mixedAtUs, captureAgeUs, payload: new Uint8Array(buffer, pos, len) });
    pos += len;
  }
  return count;
}

/** Encodes one speaker frame: kind, seq, send time (µs since the epoch), Opus packet. */
export function encodeSpeakerFrame(seq, sentAtUs, opus) {
  const out = new Uint8Array(13 + opus.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, KIND_SPEAKER_FRAME);
  view.setUint32(1, seq >>> 0);
  view.setUint32(5, Math.floor(sentAtUs / 2 ** 32));
  view.setUint32(9, sentAtUs % 2 ** 32);
  out.set(opus, 13);
  return out;
}

/** Wall-clock microseconds since the epoch. */
export const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
