// AudioWorklet that gathers microphone input into 20 ms frames (960 samples at 48 kHz) and
// posts each frame, with its peak level, to the main thread.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.frame = new Float32Array(960);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    let offset = 0;
    while (offset < input.length) {
      const n = Math.min(input.length - offset, this.frame.length - this.filled);
      this.frame.set(input.subarray(offset, offset + n), this.filled);
      this.filled += n;
      offset += n;
      if (this.filled === this.frame.length) {
        let peak = 0;
        for (const s of this.frame) peak = Math.max(peak, Math.abs(s));
        this.port.postMessage({ samples: this.frame, peak }, [this.frame.buffer]);
        this.frame = new Float32Array(960);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor('townhall-capture', CaptureProcessor);
