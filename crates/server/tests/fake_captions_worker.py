#!/usr/bin/env python3
"""A captions worker for tests: speaks the protocol (docs/protocol.md, "Captions worker") and
says the same words for every phrase, so tests of delivery do not depend on a real engine."""
import json
import struct
import sys


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


emit({"type": "ready", "engine": "fake 1"})
stdin = sys.stdin.buffer
sent_interim = set()
while True:
    head = stdin.read(9)
    if len(head) < 9:
        break
    kind, utt, length = struct.unpack("<BII", head)
    if length:
        stdin.read(length)
    if kind == 1 and utt not in sent_interim:
        sent_interim.add(utt)
        emit({"type": "interim", "utt": utt, "text": "hello from"})
    elif kind == 2:
        emit({"type": "final", "utt": utt, "text": f"hello from phrase {utt}"})
