// The latency bench's own caller page (bench/browser_latency.py drives it).
//
// One AudioContext at 48 kHz holds both ends of the call's audio:
//   fake microphone  AudioBufferSourceNodes (piper prompts) scheduled at known
//                    context times -> MediaStreamAudioDestinationNode, whose track
//                    is the call's only outgoing track (no getUserMedia, so no
//                    echo cancellation, AGC or noise suppression is in the path);
//   remote tap       the agent's track -> MediaStreamAudioSourceNode -> "tap"
//                    AudioWorklet (tap.js) -> gain 0 -> destination.
// Every time is kept on one clock: data-channel arrivals as performance.now(),
// audio as context frames, mapped to performance.now() by `toPerf`.
//
// The page is also usable in the project-page mode's init script (fakeMic below).

const RATE = 48000;
const TICK_WINDOW_MS = 4000;

const B = (window.bench = {
  ctx: null,
  tap: null,
  micDest: null,
  buffers: {},
  events: [], // {t: performance.now(), msg} per data-channel message
  audio: [], // {t: "on"|"off", frame, peak} from the tap
  ticks: [], // {recv: performance.now(), frame}
  pc: null,
  dc: null,
  audioEl: null,
  log: [],
});

function b64ToInt16(b64) {
  const bin = atob(b64);
  const out = new Int16Array(bin.length / 2);
  for (let i = 0; i < out.length; i++) {
    const lo = bin.charCodeAt(2 * i);
    const hi = bin.charCodeAt(2 * i + 1);
    out[i] = (hi << 24) >> 16 | lo;
  }
  return out;
}

/** Offset (ms) such that perf = frame / RATE * 1000 + offset, from the tick that
 *  arrived soonest after its render in the last TICK_WINDOW_MS (the render of a
 *  quantum precedes its tick's arrival by the audio thread's hop to the main thread). */
function renderOffset() {
  const now = performance.now();
  let best = Infinity;
  for (let i = B.ticks.length - 1; i >= 0; i--) {
    const k = B.ticks[i];
    if (now - k.recv > TICK_WINDOW_MS) break;
    const off = k.recv - (k.frame / RATE) * 1000;
    if (off < best) best = off;
  }
  return best;
}

B.toPerf = (frame) => (frame / RATE) * 1000 + renderOffset();

/** The same mapping by AudioContext.getOutputTimestamp (the output device's
 *  presentation time of a context time), for comparison. */
B.outputOffset = () => {
  const ts = B.ctx.getOutputTimestamp();
  return ts.performanceTime - ts.contextTime * 1000;
};

B.clock = () => ({
  perf: performance.now(),
  frame: Math.round(B.ctx.currentTime * RATE),
  renderOffset: renderOffset(),
  outputOffset: B.outputOffset(),
  baseLatency: B.ctx.baseLatency,
  outputLatency: B.ctx.outputLatency,
  ticks: B.ticks.length,
});

/** The tick spread: arrival minus nominal time minus the best offset, for the last window. */
B.tickSpread = () => {
  const best = renderOffset();
  const now = performance.now();
  return B.ticks.filter((k) => now - k.recv <= TICK_WINDOW_MS)
    .map((k) => k.recv - (k.frame / RATE) * 1000 - best);
};

B.setup = async (prompts, opts = {}) => {
  const ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
  B.ctx = ctx;
  if (ctx.state !== "running") await ctx.resume();
  // A worklet's module request does not go through the automation's request
  // interception (the bench serves this page that way), so the bench hands the
  // source in and it is loaded from a blob.
  const url = opts.tapSource
    ? URL.createObjectURL(new Blob([opts.tapSource], { type: "text/javascript" }))
    : "tap.js";
  await ctx.audioWorklet.addModule(url);
  const tap = new AudioWorkletNode(ctx, "tap", {
    numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { level: opts.level ?? 0.01, quietMs: opts.quietMs ?? 40, tickEvery: 4 },
  });
  tap.port.onmessage = (ev) => {
    const m = ev.data;
    if (m.t === "tick") {
      B.ticks.push({ recv: performance.now(), frame: m.frame });
      if (B.ticks.length > 4000) B.ticks.splice(0, 2000);
    } else {
      B.audio.push(m);
    }
  };
  const mute = ctx.createGain();
  mute.gain.value = 0;
  tap.connect(mute).connect(ctx.destination);
  B.tap = tap;
  B.micDest = ctx.createMediaStreamDestination();
  B.micDest.channelCount = 1;
  // Something must always play into the track: with no active input Chromium stops
  // feeding the track and the call sends no audio between prompts (the server then
  // counts the path as lost after 2 s). A started ConstantSourceNode at 0 renders
  // digital silence all the time, as a microphone's track never stops.
  const floor = ctx.createConstantSource();
  floor.offset.value = 0;
  floor.connect(B.micDest);
  floor.start();
  for (const [name, b64] of Object.entries(prompts)) {
    const pcm = b64ToInt16(b64);
    const buf = ctx.createBuffer(1, pcm.length, RATE);
    const data = buf.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    B.buffers[name] = buf;
  }
  return { sampleRate: ctx.sampleRate, state: ctx.state, baseLatency: ctx.baseLatency,
           outputLatency: ctx.outputLatency };
};

/** Schedule prompt `name` `delayS` from now on the fake microphone, from `skip`
 *  samples into it; the context frame its sample 0 would have played at. */
B.play = (name, delayS = 0.2, skip = 0) => {
  const src = B.ctx.createBufferSource();
  src.buffer = B.buffers[name];
  src.connect(B.micDest);
  const when = Math.round((B.ctx.currentTime + delayS) * RATE);
  src.start(when / RATE, skip / RATE);
  return { startFrame: when - skip, perfNow: performance.now() };
};

function attachRemote(stream, mode) {
  if (mode !== "none") {
    const el = document.createElement("audio");
    el.autoplay = true;
    el.muted = mode === "muted";
    el.srcObject = stream;
    document.body.appendChild(el);
    el.play().catch((e) => B.log.push(`play: ${e}`));
    B.audioEl = el;
  }
  const src = B.ctx.createMediaStreamSource(stream);
  src.connect(B.tap);
}

/** Dial the server (same origin): offer, answer, the `events` channel; resolves
 *  at session.ready. `element`: "muted" | "unmuted" | "none" (the <audio> element
 *  the remote stream is also attached to). */
B.call = async ({ element = "muted" } = {}) => {
  const cfg = await (await fetch("/config", { cache: "no-store" })).json();
  const pc = new RTCPeerConnection({ iceServers: cfg.iceServers || [] });
  B.pc = pc;
  const dc = pc.createDataChannel("events", { ordered: true });
  B.dc = dc;
  let ready;
  const readyP = new Promise((r) => (ready = r));
  dc.onmessage = (ev) => {
    const t = performance.now();
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      msg = { type: "unparsed", data: String(ev.data).slice(0, 200) };
    }
    B.events.push({ t, msg });
    if (msg.type === "session.ready") ready(msg);
  };
  const track = B.micDest.stream.getAudioTracks()[0];
  pc.addTrack(track, B.micDest.stream);
  pc.ontrack = (ev) => attachRemote(ev.streams[0] || new MediaStream([ev.track]), element);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, 5000);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const res = await fetch("/offer", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await res.json();
  if (!answer.sdp) throw new Error(`offer refused: ${JSON.stringify(answer)}`);
  B.callId = answer.call_id;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  const msg = await readyP;
  return { callId: B.callId, ready: msg, track: track.getSettings() };
};

/** The audio stats the bench samples per turn (cumulative counters). */
B.stats = async () => {
  const out = { t: performance.now() };
  const report = await B.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.inbound = {
        jitterBufferDelay: s.jitterBufferDelay, jitterBufferEmittedCount: s.jitterBufferEmittedCount,
        jitterBufferTargetDelay: s.jitterBufferTargetDelay,
        jitterBufferMinimumDelay: s.jitterBufferMinimumDelay, packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost, concealedSamples: s.concealedSamples,
        totalSamplesReceived: s.totalSamplesReceived, jitter: s.jitter,
      };
    } else if (s.type === "media-playout") {
      out.playout = { totalPlayoutDelay: s.totalPlayoutDelay, totalSamplesCount: s.totalSamplesCount };
    } else if (s.type === "candidate-pair" && s.nominated) {
      out.rtt = s.currentRoundTripTime;
    }
  });
  return out;
};

B.hangUp = () => {
  if (B.pc) B.pc.close();
  B.pc = null;
};

// ---- the project's page (--page project) ------------------------------------------
//
// Installed by an init script before the page's own scripts run: getUserMedia gives
// the fake microphone's stream; every RTCPeerConnection the page makes is watched
// (its remote audio goes into the tap, its data channels' messages are stamped in the
// same task as the page's handler); the <audio> element's `muted` and `volume`
// setters are wrapped so that each change the page makes is recorded with its time.
B.mutes = []; // {t, prop, value} for every muted/volume set on a media element
B.hookProject = () => {
  const md = navigator.mediaDevices;
  if (md) {
    md.getUserMedia = async () => {
      if (!B.micDest) throw new DOMException("bench: setup() first", "NotReadableError");
      return B.micDest.stream;
    };
  }
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    B.pc = pc;
    pc.addEventListener("track", (ev) => {
      if (ev.track.kind !== "audio" || !B.ctx) return;
      B.ctx.createMediaStreamSource(new MediaStream([ev.track])).connect(B.tap);
    });
    const create = pc.createDataChannel.bind(pc);
    pc.createDataChannel = (label, opts) => {
      const dc = create(label, opts);
      if (label === "events") {
        dc.addEventListener("message", (ev) => {
          const t = performance.now();
          let msg;
          try {
            msg = JSON.parse(ev.data);
          } catch {
            msg = { type: "unparsed" };
          }
          B.events.push({ t, msg });
        });
      }
      return dc;
    };
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  for (const prop of ["muted", "volume"]) {
    const d = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, prop);
    Object.defineProperty(HTMLMediaElement.prototype, prop, {
      ...d,
      set(value) {
        if (this.srcObject) B.mutes.push({ t: performance.now(), prop, value });
        d.set.call(this, value);
      },
    });
  }
};
