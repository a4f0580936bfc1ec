// The page's audio: the microphone (availability, constraints, devices) and
// the levels of both directions, measured with WebAudio and drawn on the mic
// meter and the agent's orb.

const FFT_SIZE = 1024;
const SPEAKING_LEVEL = 0.01; // remote RMS above which the orb shows talking

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

/** The output device's latency in ms (0 before audio was unlocked). */
export function outputLatencyMs() {
  return ctx ? ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000 : 0;
}

function analyserFor(stream) {
  if (!ctx) return null;
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = FFT_SIZE;
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

  /** The first remote stream only: the server sends one audio track. */
  watchRemote(stream) {
    if (!this.#remote) this.#remote = analyserFor(stream);
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
