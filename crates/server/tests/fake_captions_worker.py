#!/usr/bin/env python3
"""A captions worker for tests: speaks the protocol (docs/protocol.md, "Captions worker") and
says the same words for every phrase, so tests of delivery do not depend on a real engine.

`--final-delay SECS` makes each final come that long after its phrase ended (an engine still
decoding when the space ends, say)."""
import json
import struct
import sys
import threading

delay = 0.0
if "--final-delay" in sys.argv:
    delay = float(sys.argv[sys.argv.index("--final-delay") + 1])
lock = threading.Lock()


def emit(obj):
    with lock:
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
        final = {"type": "final", "utt": utt, "text": f"hello from phrase {utt}"}
        if delay > 0:
            threading.Timer(delay, emit, [final]).start()
        else:
            emit(final)
# Finals still on their way are said before leaving (a worker's stdin closes when its stage
# ends; it may still answer for a while).
for t in threading.enumerate():
    if t is not threading.current_thread():
        t.join()
