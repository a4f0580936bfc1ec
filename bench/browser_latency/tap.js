// AudioWorklet processors of the latency bench page (bench/browser_latency.py).
//
// "tap": on the remote (agent) audio. Reports, in AudioContext frames of this
// context, the first audible sample after a quiet stretch ("on") and the end of
// the last audible sample once `quietMs` of quiet followed ("off"); audible means
// |sample| > `level` (0.01 = -40 dBFS, the bench's one definition of audible).
// Every `tickEvery` render quanta it also posts its currentFrame ("tick"): the page
// maps AudioContext time to performance.now() from the earliest-arriving ticks.
class Tap extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.level = o.level ?? 0.01;
    this.quiet = Math.round(((o.quietMs ?? 40) / 1000) * sampleRate);
    this.tickEvery = o.tickEvery ?? 4;
    this.n = 0;
    this.on = false;
    this.last = -1; // frame of the last audible sample
    this.peak = 0; // peak of the current audible stretch
  }

  process(inputs) {
    const f0 = currentFrame;
    if (++this.n % this.tickEvery === 0) this.port.postMessage({ t: "tick", frame: f0 });
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        const v = ch[i] < 0 ? -ch[i] : ch[i];
        if (v > this.level) {
          if (!this.on) {
            this.on = true;
            this.peak = 0;
            this.port.postMessage({ t: "on", frame: f0 + i });
          }
          if (v > this.peak) this.peak = v;
          this.last = f0 + i;
        }
      }
    }
    if (this.on && f0 + 128 - 1 - this.last >= this.quiet) {
      this.on = false;
      this.port.postMessage({ t: "off", frame: this.last + 1, peak: this.peak });
    }
    return true;
  }
}

registerProcessor("tap", Tap);
