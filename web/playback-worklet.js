// AudioWorklet that plays decoded PCM from a ring buffer with a small jitter buffer:
// it starts once `target` samples are queued, refills after an underrun, and drops the oldest
// audio when more than `max` samples pile up (to keep latency bounded).

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.capacity = 48000 * 2;
    this.ring = new Float32Array(this.capacity);
    this.read = 0;
    this.write = 0;
    this.target = opts.target || 4800; // 100 ms
    this.max = opts.max || 19200; // 400 ms
    this.playing = false;
    this.port.onmessage = (e) => this.push(e.data);
  }

  get queued() {
    return (this.write - this.read + this.capacity) % this.capacity;
  }

  push(samples) {
    for (let i = 0; i < samples.length; i++) {
      this.ring[this.write] = samples[i];
      this.write = (this.write + 1) % this.capacity;
      if (this.write === this.read) this.read = (this.read + 1) % this.capacity;
    }
    if (this.queued > this.max) this.read = (this.write - this.target + this.capacity) % this.capacity;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued >= this.target) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (this.playing && this.read !== this.write) {
        out[i] = this.ring[this.read];
        this.read = (this.read + 1) % this.capacity;
      } else {
        out[i] = 0;
        this.playing = false;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor('townhall-playback', PlaybackProcessor);
