#!/usr/bin/env python3
"""Townhall captions worker: PocketSphinx 5 (PyPI `pocketsphinx`, its en-us model in the wheel).

Speaks the captions worker protocol (docs/protocol.md, "Captions worker"): framed 16 kHz s16le
mono audio of phrases on stdin, one JSON object per line on stdout. The server decides where
phrases begin and end (voice activity) and when cues are shown; this only turns sound into words.

Nothing is fetched: the acoustic model, dictionary and language model come with the package.
"""
import json
import struct
import sys
import time

AUDIO, END = 1, 2
FRAME_RATE = 100  # PocketSphinx frames per second (10 ms)
INTERIM_EVERY_S = 0.4


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


def words_of(decoder):
    words = []
    for seg in decoder.seg():
        w = seg.word
        if w.startswith("<") or w.startswith("[") or w == "<sil>":
            continue
        if "(" in w:  # alternative pronunciations: "the(2)"
            w = w[: w.index("(")]
        words.append({"w": w, "start": seg.start_frame / FRAME_RATE, "end": seg.end_frame / FRAME_RATE})
    return words


def main():
    try:
        from pocketsphinx import Decoder
        import pocketsphinx
    except ImportError as e:
        emit({"type": "error", "message": f"pocketsphinx is not installed: {e} (pip install pocketsphinx)"})
        return 2
    decoder = Decoder(loglevel="FATAL")
    version = getattr(pocketsphinx, "__version__", "5")
    emit({"type": "ready", "engine": f"pocketsphinx {version}", "sample_rate": 16000})
    stdin = sys.stdin.buffer
    current = None  # utterance id being decoded
    last_interim = 0.0
    last_text = ""
    while True:
        head = read_exact(stdin, 9)
        if head is None:
            return 0
        kind, utt, length = struct.unpack("<BII", head)
        payload = read_exact(stdin, length) if length else b""
        if payload is None:
            return 0
        if kind == AUDIO:
            if current != utt:
                if current is not None:
                    decoder.end_utt()
                decoder.start_utt()
                current, last_text, last_interim = utt, "", time.monotonic()
            decoder.process_raw(payload, False, False)
            now = time.monotonic()
            if now - last_interim >= INTERIM_EVERY_S:
                last_interim = now
                hyp = decoder.hyp()
                text = hyp.hypstr if hyp is not None else ""
                if text and text != last_text:
                    last_text = text
                    emit({"type": "interim", "utt": utt, "text": text})
        elif kind == END:
            if current != utt:
                emit({"type": "final", "utt": utt, "text": "", "words": []})
                continue
            decoder.end_utt()
            current = None
            hyp = decoder.hyp()
            emit({
                "type": "final",
                "utt": utt,
                "text": hyp.hypstr if hyp is not None else "",
                "words": words_of(decoder),
            })


if __name__ == "__main__":
    sys.exit(main())
