// The page's audio: the microphone (availability, constraints, devices) and
// the levels of both directions, measured with WebAudio and drawn on the mic
// meter and the agent's orb.

const FFT_SIZE = 1024;
const SPEAKING_LEVEL = 0.01; // remote RMS above which the orb shows talking
// The remote analyser keeps a longer window (43 ms at 48 kHz) so that polling it
// every ONSET_POLL_MS (call.js) sees every sample once at least.
const REMOTE_FFT_SIZE = 2048;
const ONSET_BLOCK = 128; // samples: one render quantum
// Block RMS above which reply audio has started (about -46 dBFS): the server's
// silence decodes to (near) zeros, speech onsets are well above it.
const ONSET_LEVEL = 0.005;

let ctx = null;

/** getUserMedia exists only in a secure context (https, or localhost). */
export function microphoneAvailable() {
  return window.isSecureContext && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

export function micConstraints(deviceId, raw) {
  const audio = {};
  if (deviceId) audio.deviceId = { exact: deviceId };
  // raw turns off the browser's voice processing (tests that need fidelity).
  audio.echoCancellation = !raw;
  audio.noiseSuppression = !raw;
  audio.autoGainControl = !raw;
  return { audio, video: false };
}

/** The named microphones (not the "default" alias), or null when they cannot be listed. */
export async function listMicrophones() {
  if (!microphoneAvailable() || !navigator.mediaDevices.enumerateDevices) return null;
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    return devices.filter((d) => d.kind === "audioinput" && d.deviceId && d.deviceId !== "default");
  } catch {
    return null;
  }
}

/** Create or resume the AudioContext; call it inside the tap, as iOS Safari
 *  only lets audio start from a user gesture. */
export function unlockAudio() {
  if (!ctx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (Ctx) ctx = new Ctx();
  }
  if (ctx && ctx.state === "suspended") ctx.resume().catch(() => {});
  return ctx;
}

/**
 * Bring a suspended AudioContext back (iOS Safari suspends it, or calls it
 * "interrupted", after the lock screen, a phone call or Siri). Safe to call at
 * any time; outside a user gesture iOS may refuse, so the page calls it again on
 * the next tap. Returns the context's state.
 */
export function wakeAudio() {
  if (ctx && ctx.state !== "running" && ctx.state !== "closed") ctx.resume().catch(() => {});
  return ctx ? ctx.state : null;
}

/** The output device's latency in ms (0 before audio was unlocked). */
export function outputLatencyMs() {
  return ctx ? ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000 : 0;
}

function analyserFor(stream, fftSize = FFT_SIZE) {
  if (!ctx) return null;
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = fftSize;
  source.connect(analyser); // not to destination: the <audio> element plays it
  return { source, analyser, buf: new Float32Array(analyser.fftSize) };
}

function rms(a) {
  if (!a) return 0;
  a.analyser.getFloatTimeDomainData(a.buf);
  let sum = 0;
  for (let i = 0; i < a.buf.length; i++) sum += a.buf[i] * a.buf[i];
  return Math.sqrt(sum / a.buf.length);
}

// dBFS-ish 0-100 scale so quiet speech still moves the bar
function percent(level) {
  return Math.max(0, Math.min(100, ((20 * Math.log10(level + 1e-6) + 60) / 60) * 100));
}

/** The two levels of a call and their drawing on `meter` (a bar) and `orb`. */
export class Levels {
  #mic = null;
  #remote = null;

  constructor(meter, orb) {
    this.meter = meter;
    this.orb = orb;
  }

  watchMic(stream) {
    if (this.#mic) this.#mic.source.disconnect();
    this.#mic = analyserFor(stream);
  }

  /** The agent's audio. A resumed call brings a new track: the analyser follows
   *  it (a MediaStreamAudioSourceNode stays on the track it was made with). */
  watchRemote(stream) {
    if (this.#remote) this.#remote.source.disconnect();
    this.#remote = analyserFor(stream, REMOTE_FFT_SIZE);
  }

  /** How long the remote analyser's window is, in ms (0 when nothing is watched). */
  remoteWindowMs() {
    return this.#remote ? (this.#remote.buf.length / ctx.sampleRate) * 1000 : 0;
  }

  /**
   * When the remote audio in the analyser's window first became audible, as a
   * performance.now() time, or null when the whole window is quiet. The window
   * holds the last samples the audio graph rendered, so a block's time is now
   * minus its distance from the window's end (within a render quantum, ~3 ms).
   */
  remoteOnset() {
    const a = this.#remote;
    if (!a || ctx.state !== "running") return null;
    const now = performance.now();
    a.analyser.getFloatTimeDomainData(a.buf);
    for (let start = 0; start + ONSET_BLOCK <= a.buf.length; start += ONSET_BLOCK) {
      let sum = 0;
      for (let i = start; i < start + ONSET_BLOCK; i++) sum += a.buf[i] * a.buf[i];
      if (Math.sqrt(sum / ONSET_BLOCK) > ONSET_LEVEL) {
        return now - ((a.buf.length - start) / ctx.sampleRate) * 1000;
      }
    }
    return null;
  }

  /** Current RMS levels, 0 for a side not (or no longer) watched. */
  read() {
    return { mic: rms(this.#mic), remote: rms(this.#remote) };
  }

  draw(mic, remote) {
    this.meter.style.width = `${percent(mic).toFixed(0)}%`;
    this.orb.classList.toggle("talking", remote > SPEAKING_LEVEL);
    this.orb.style.setProperty("--level", (percent(remote) / 100).toFixed(2));
  }

  stop() {
    [this.#mic, this.#remote].forEach((a) => a && a.source.disconnect());
    this.#mic = null;
    this.#remote = null;
    this.meter.style.width = "0%";
    this.orb.classList.remove("talking");
    this.orb.style.setProperty("--level", "0");
  }
}
