// rtc-agent caller page: one WebRTC call to the server, the `events` data
// channel for transcripts/state/tools (docs/data-channel.md), no build step.
// The page never sees a cloud API key: the server holds it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const els = {
    state: $("state"), notice: $("notice"), call: $("call"), mute: $("mute"), mic: $("mic"),
    micLevel: $("mic-level"), chat: $("chat"), form: $("text-form"), text: $("text"),
    send: $("send"), audio: $("remote"), orb: $("agent-indicator"), agentLabel: $("agent-label"),
    tokenRow: $("token-row"), token: $("token"), diag: $("diag"), diagnostics: $("diagnostics"),
  };

  const STATE_LABELS = {
    idle: "Not connected",
    connecting: "Connecting…",
    listening: "Listening",
    user_speaking: "You are speaking",
    thinking: "Thinking…",
    speaking: "Agent speaking",
    reconnecting: "Reconnecting…",
    ended: "Call ended",
  };
  const ICE_GATHER_TIMEOUT_MS = 5000;
  const PLAYOUT_INTERVAL_MS = 500;
  const STATS_INTERVAL_MS = 1000;
  const LEVEL_INTERVAL_MS = 50;
  const MAX_EVENTS = 2000;

  // Everything a test (or a curious person in devtools) may want to read.
  const hook = {
    state: "idle",
    config: null,
    callId: null,
    backend: null,
    connectionState: "new",
    transcripts: [], // {role, item_id, text, final, interrupted, typed}
    events: [], // every message received on `events`, in order
    sent: [], // every message sent on `events`
    tools: [], // {call_id, name, arguments, ok, duration_ms, running}
    notice: null, // {kind, text}
    micLevel: 0,
    remoteLevel: 0,
    remotePeak: 0,
    lastStats: null,
    lastPlayoutMs: null,
    stats: () => collectStats(),
    call: () => startCall(),
    hangup: () => hangUp("hung up"),
    sendText: (text) => sendText(text),
  };
  window.rtcAgent = hook;

  let pc = null;
  let dc = null;
  let localStream = null;
  let audioCtx = null;
  let micAnalyser = null;
  let remoteAnalyser = null;
  let timers = [];
  let muted = false;
  let prevJitter = null; // {delay, count} of the last playout sample
  const items = new Map(); // item_id -> {entry, li}
  const toolRows = new Map(); // tool call_id -> li

  // ---- small helpers --------------------------------------------------------

  function setState(state) {
    hook.state = state;
    document.body.dataset.state = state;
    els.state.textContent = STATE_LABELS[state] || state;
    const label = {
      idle: "Tap Call and talk to the agent.",
      connecting: "Connecting…",
      listening: "Go ahead, I'm listening.",
      user_speaking: "Listening to you…",
      thinking: "Thinking…",
      speaking: "Speaking… (talk to interrupt)",
      reconnecting: "The agent's connection dropped; reconnecting…",
      ended: "Call ended. Tap Call to start again.",
    }[state];
    if (label) els.agentLabel.textContent = label;
  }

  function showNotice(kind, text) {
    hook.notice = kind ? { kind, text } : null;
    els.notice.hidden = !kind;
    els.notice.dataset.kind = kind || "";
    els.notice.textContent = text || "";
  }

  function token() {
    return params.get("token") || els.token.value.trim() || "";
  }

  function authHeaders(extra = {}) {
    const t = token();
    return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
  }

  function inCall() {
    return pc !== null;
  }

  function setCallUi(active) {
    els.call.textContent = active ? "Hang up" : "Call";
    els.call.classList.toggle("danger", active);
    els.call.classList.toggle("primary", !active);
    els.mute.disabled = !active;
    els.text.disabled = !active;
    els.send.disabled = !active;
    if (!active) {
      muted = false;
      els.mute.setAttribute("aria-pressed", "false");
      els.mute.textContent = "Mute";
    }
  }

  // ---- set-up checks --------------------------------------------------------

  function mediaAvailable() {
    return window.isSecureContext && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  async function loadConfig() {
    try {
      // Never wait forever: without the settings the page still shows why.
      const res = await fetch("config", { cache: "no-store", signal: AbortSignal.timeout(10000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      hook.config = await res.json();
    } catch (err) {
      hook.config = { iceServers: [], tokenRequired: false };
      showNotice("config", `Could not load the server's settings (${err.message}). Is rtc-agent running?`);
      return false;
    }
    if (hook.config.tokenRequired && !params.get("token")) els.tokenRow.hidden = false;
    return true;
  }

  async function listMicrophones() {
    if (!mediaAvailable() || !navigator.mediaDevices.enumerateDevices) return;
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      return;
    }
    const mics = devices.filter((d) => d.kind === "audioinput" && d.deviceId && d.deviceId !== "default");
    const chosen = els.mic.value;
    els.mic.replaceChildren(new Option("Default microphone", ""));
    mics.forEach((d, i) => els.mic.add(new Option(d.label || `Microphone ${i + 1}`, d.deviceId)));
    if ([...els.mic.options].some((o) => o.value === chosen)) els.mic.value = chosen;
  }

  function micConstraints() {
    const audio = {};
    if (els.mic.value) audio.deviceId = { exact: els.mic.value };
    // ?raw=1 turns off the browser's voice processing (tests that need fidelity).
    const raw = params.get("raw") === "1";
    audio.echoCancellation = !raw;
    audio.noiseSuppression = !raw;
    audio.autoGainControl = !raw;
    return { audio, video: false };
  }

  function micErrorText(err) {
    switch (err && err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return ["mic-denied", "Microphone access was denied. Allow the microphone for this site " +
          "(the lock or site-settings icon by the address bar), then tap Call again."];
      case "NotFoundError":
      case "OverconstrainedError":
        return ["no-mic", "No microphone was found. Connect one (or pick another in the list) and tap Call again."];
      case "NotReadableError":
      case "AbortError":
        return ["mic-busy", "The microphone is in use by another app or could not be started."];
      default:
        return ["mic-error", `Could not open the microphone: ${err && err.message ? err.message : err}`];
    }
  }

  // ---- audio levels ---------------------------------------------------------

  function ensureAudioContext() {
    // Created inside the tap: iOS Safari only lets audio start from a gesture.
    if (!audioCtx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (Ctx) audioCtx = new Ctx();
    }
    if (audioCtx && audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
    return audioCtx;
  }

  function analyserFor(stream) {
    if (!audioCtx) return null;
    const source = audioCtx.createMediaStreamSource(stream);
    const analyser = audioCtx.createAnalyser();
    analyser.fftSize = 1024;
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

  function updateLevels() {
    hook.micLevel = muted ? 0 : rms(micAnalyser);
    hook.remoteLevel = rms(remoteAnalyser);
    if (hook.remoteLevel > hook.remotePeak) hook.remotePeak = hook.remoteLevel;
    // dBFS-ish scale so quiet speech still moves the bar
    const pct = (x) => Math.max(0, Math.min(100, ((20 * Math.log10(x + 1e-6) + 60) / 60) * 100));
    els.micLevel.style.width = `${pct(hook.micLevel).toFixed(0)}%`;
    const speaking = hook.remoteLevel > 0.01;
    els.orb.classList.toggle("talking", speaking);
    els.orb.style.setProperty("--level", (pct(hook.remoteLevel) / 100).toFixed(2));
  }

  // ---- chat view ------------------------------------------------------------

  function scrollChat() {
    els.chat.scrollTop = els.chat.scrollHeight;
  }

  function addBubble(role, text, extraClass) {
    const li = document.createElement("li");
    li.className = `msg ${role}${extraClass ? ` ${extraClass}` : ""}`;
    li.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : role === "assistant" ? "Agent" : "";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(who, body);
    els.chat.append(li);
    scrollChat();
    return li;
  }

  function transcriptItem(role, itemId, text) {
    let item = itemId ? items.get(itemId) : undefined;
    if (item) return item;
    // A typed message is shown at once. The server echoes it as a user
    // transcript (with an empty item_id, or with the typed text): that echo
    // takes the typed bubble over instead of repeating it. Spoken transcripts
    // (real item ids, other text) always get their own bubble.
    if (role === "user") {
      const pending = hook.transcripts.find(
        (t) => t.typed && !t._claimed && (!itemId || (text !== undefined && t.text === text)),
      );
      if (pending) {
        Object.defineProperty(pending, "_claimed", { value: true, enumerable: false });
        if (itemId) pending.item_id = itemId;
        item = { entry: pending, li: pending._li };
        if (itemId) items.set(itemId, item);
        return item;
      }
    }
    const entry = { role, item_id: itemId || null, text: "", final: false, interrupted: false, typed: false };
    hook.transcripts.push(entry);
    const li = addBubble(role, "", "partial");
    Object.defineProperty(entry, "_li", { value: li, enumerable: false });
    item = { entry, li };
    if (itemId) items.set(itemId, item);
    return item;
  }

  function onTranscriptDelta(m) {
    const item = transcriptItem(m.role, m.item_id);
    if (item.entry.final) return;
    item.entry.text += m.delta || "";
    item.li.querySelector(".text").textContent = item.entry.text;
    scrollChat();
  }

  function onTranscriptDone(m) {
    const item = transcriptItem(m.role, m.item_id, m.text);
    if (item.entry.typed && m.role === "user") {
      item.entry.final = true;
      return; // keep what the person typed
    }
    item.entry.text = typeof m.text === "string" ? m.text : item.entry.text;
    item.entry.final = true;
    item.entry.interrupted = !!m.interrupted;
    item.li.classList.remove("partial");
    item.li.classList.toggle("interrupted", item.entry.interrupted);
    item.li.querySelector(".text").textContent = item.entry.text;
    if (item.entry.interrupted) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "interrupted";
      item.li.append(tag);
    }
    if (!item.entry.text && m.role === "user") item.li.querySelector(".text").textContent = "(inaudible)";
    scrollChat();
  }

  function describeArgs(args) {
    if (!args || typeof args !== "object") return "";
    const s = Object.entries(args).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
    return s.length > 120 ? `${s.slice(0, 117)}…` : s;
  }

  function onToolStarted(m) {
    const tool = { call_id: m.call_id, name: m.name, arguments: m.arguments, running: true, ok: null, duration_ms: null };
    hook.tools.push(tool);
    const li = addBubble("tool", "", "running");
    li.querySelector(".who").textContent = "Tool";
    li.querySelector(".text").textContent = `${m.name}(${describeArgs(m.arguments)}) running…`;
    li.dataset.callId = m.call_id;
    toolRows.set(m.call_id, { li, tool });
  }

  function onToolFinished(m) {
    let row = toolRows.get(m.call_id);
    if (!row) {
      onToolStarted({ call_id: m.call_id, name: m.name, arguments: {} });
      row = toolRows.get(m.call_id);
    }
    Object.assign(row.tool, { running: false, ok: !!m.ok, duration_ms: m.duration_ms });
    row.li.classList.remove("running");
    row.li.classList.add(m.ok ? "ok" : "failed");
    const took = typeof m.duration_ms === "number" ? ` in ${Math.round(m.duration_ms)} ms` : "";
    row.li.querySelector(".text").textContent = `${m.name} ${m.ok ? "done" : "failed"}${took}`;
  }

  // ---- data channel ---------------------------------------------------------

  function send(msg) {
    if (!dc || dc.readyState !== "open") return false;
    dc.send(JSON.stringify(msg));
    if (msg.type !== "playout") hook.sent.push(msg);
    return true;
  }

  function sendText(text) {
    text = String(text || "").trim().slice(0, 4000);
    if (!text) return false;
    if (!send({ type: "text", text })) {
      showNotice("not-connected", "Not connected: start a call to send messages.");
      return false;
    }
    const entry = { role: "user", item_id: null, text, final: true, interrupted: false, typed: true };
    hook.transcripts.push(entry);
    const li = addBubble("user", text, "typed");
    Object.defineProperty(entry, "_li", { value: li, enumerable: false });
    return true;
  }

  function onMessage(ev) {
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!m || typeof m !== "object") return;
    hook.events.push(m);
    if (hook.events.length > MAX_EVENTS) hook.events.splice(0, hook.events.length - MAX_EVENTS);
    switch (m.type) {
      case "session.ready":
        hook.backend = m.backend || null;
        if (hook.state === "connecting") setState("listening");
        break;
      case "state":
        if (STATE_LABELS[m.state]) setState(m.state);
        break;
      case "transcript.delta":
        onTranscriptDelta(m);
        break;
      case "transcript.done":
        onTranscriptDone(m);
        break;
      case "tool.started":
        onToolStarted(m);
        break;
      case "tool.finished":
        onToolFinished(m);
        break;
      case "error":
        addBubble("system", `Error: ${m.message || m.code}`, "error");
        break;
      default:
        break; // pong and anything newer: recorded in events only
    }
  }

  // ---- stats: playout delay and diagnostics ---------------------------------

  async function collectStats() {
    if (!pc) return hook.lastStats;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pair = null;
    let inbound = null;
    let remoteInbound = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) || pair;
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
      if (s.type === "remote-inbound-rtp" && s.kind === "audio") remoteInbound = s;
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === "candidate-pair" && s.state === "succeeded" && (s.nominated || s.selected)) pair = s;
      });
    }
    const local = pair && byId.get(pair.localCandidateId);
    const remote = pair && byId.get(pair.remoteCandidateId);
    const codec = inbound && inbound.codecId && byId.get(inbound.codecId);
    const received = inbound ? inbound.packetsReceived || 0 : 0;
    const lost = inbound ? Math.max(0, inbound.packetsLost || 0) : 0;
    const stats = {
      connectionState: pc.connectionState,
      localCandidateType: local ? local.candidateType : null,
      remoteCandidateType: remote ? remote.candidateType : null,
      localProtocol: local ? local.protocol : null,
      relayProtocol: local ? local.relayProtocol || null : null,
      localAddress: local ? `${local.address || local.ip}:${local.port}` : null,
      remoteAddress: remote ? `${remote.address || remote.ip}:${remote.port}` : null,
      rttMs: pair && typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime * 1000 : null,
      jitterMs: inbound && typeof inbound.jitter === "number" ? inbound.jitter * 1000 : null,
      packetsReceived: received,
      packetsLost: lost,
      lossPct: received + lost > 0 ? (100 * lost) / (received + lost) : null,
      sentLossPct: remoteInbound && typeof remoteInbound.fractionLost === "number" ? remoteInbound.fractionLost * 100 : null,
      codec: codec ? `${codec.mimeType.replace(/^audio\//, "")} ${codec.clockRate / 1000} kHz${codec.channels ? ` ×${codec.channels}` : ""}` : null,
      jitterBufferDelay: inbound ? inbound.jitterBufferDelay || 0 : 0,
      jitterBufferEmittedCount: inbound ? inbound.jitterBufferEmittedCount || 0 : 0,
      bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
    };
    hook.lastStats = stats;
    return stats;
  }

  function playoutDelayMs(stats) {
    // Jitter-buffer delay of the last interval (cumulative counters, so use
    // deltas), else the running average, plus the output device's latency.
    const delay = stats.jitterBufferDelay;
    const count = stats.jitterBufferEmittedCount;
    let jb = 0;
    if (prevJitter && count > prevJitter.count) jb = ((delay - prevJitter.delay) / (count - prevJitter.count)) * 1000;
    else if (count > 0) jb = (delay / count) * 1000;
    prevJitter = { delay, count };
    let out = 0;
    if (audioCtx) out = ((audioCtx.outputLatency || 0) + (audioCtx.baseLatency || 0)) * 1000;
    return Math.max(0, Math.min(5000, jb + out));
  }

  function fmt(v, unit, digits = 0) {
    return typeof v === "number" && isFinite(v) ? `${v.toFixed(digits)} ${unit}` : "–";
  }

  function renderDiagnostics(s) {
    const set = (k, v) => {
      const dd = els.diag.querySelector(`[data-k="${k}"]`);
      if (dd) dd.textContent = v;
    };
    set("connection", s ? s.connectionState : "–");
    set("candidates", s && s.localCandidateType
      ? `local ${s.localCandidateType}${s.relayProtocol ? `/${s.relayProtocol}` : ""} (${s.localProtocol}) ↔ remote ${s.remoteCandidateType}`
      : "–");
    set("rtt", fmt(s && s.rttMs, "ms"));
    set("jitter", fmt(s && s.jitterMs, "ms", 1));
    set("loss", s && s.lossPct !== null
      ? `in ${s.lossPct.toFixed(1)} % (${s.packetsLost} of ${s.packetsLost + s.packetsReceived})` +
        (s.sentLossPct !== null ? ` · out ${s.sentLossPct.toFixed(1)} %` : "")
      : "–");
    set("codec", (s && s.codec) || "–");
    set("playout", fmt(hook.lastPlayoutMs, "ms"));
    set("call", hook.callId ? `${hook.callId}${hook.backend ? ` · ${hook.backend}` : ""}` : "–");
  }

  async function statsTick() {
    try {
      const s = await collectStats();
      if (!s) return;
      hook.lastPlayoutMs = playoutDelayMs(s);
      send({ type: "playout", delay_ms: Math.round(hook.lastPlayoutMs) });
    } catch {
      /* the peer connection closed between ticks */
    }
  }

  // ---- the call -------------------------------------------------------------

  function waitForIceGathering(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (peer.iceGatheringState === "complete") done();
      };
      // The server does not trickle: send what we have after a while rather than hang.
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      peer.addEventListener("icegatheringstatechange", check);
    });
  }

  async function postOffer(offer) {
    const res = await fetch("offer", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ sdp: offer.sdp, type: offer.type }),
    });
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (res.ok && body && body.sdp) return body;
    const err = (body && body.error) || {};
    const e = new Error(err.message || `HTTP ${res.status}`);
    e.status = res.status;
    e.code = err.code || null;
    e.retryAfter = res.headers.get("Retry-After");
    throw e;
  }

  function offerErrorNotice(e) {
    if (e.status === 503 || e.code === "at_capacity") {
      const wait = e.retryAfter ? ` Try again in about ${e.retryAfter} s.` : " Try again in a moment.";
      return ["capacity", `The agent is busy: every line is in use.${wait}`];
    }
    if (e.status === 401 || e.status === 403) {
      els.tokenRow.hidden = false;
      return ["auth", `The server refused the call (${e.message}). Check the access token.`];
    }
    if (e.status === 413) return ["offer-too-large", "The call set-up was too large for the server."];
    if (e.status) return ["offer-failed", `The server could not take the call: ${e.message}`];
    return ["offer-failed", `Could not reach the server: ${e.message}`];
  }

  async function startCall() {
    if (inCall()) return;
    showNotice(null);
    if (!mediaAvailable()) {
      showNotice("insecure", insecureText());
      return;
    }
    const ctx = ensureAudioContext();
    // Unlock playback inside the tap (iOS); the stream is attached later.
    els.audio.muted = false;
    els.audio.play().catch(() => {});
    setState("connecting");
    els.call.disabled = true;
    try {
      localStream = await navigator.mediaDevices.getUserMedia(micConstraints());
    } catch (err) {
      const [kind, text] = micErrorText(err);
      showNotice(kind, text);
      setState("idle");
      els.call.disabled = false;
      return;
    }
    listMicrophones();
    if (ctx) micAnalyser = analyserFor(localStream);

    const relay = params.get("relay") === "1";
    pc = new RTCPeerConnection({
      iceServers: (hook.config && hook.config.iceServers) || [],
      iceTransportPolicy: relay ? "relay" : "all",
    });
    hook.connectionState = pc.connectionState;
    const peer = pc;
    dc = pc.createDataChannel("events", { ordered: true });
    dc.onmessage = onMessage;
    dc.onopen = () => {
      els.text.disabled = false;
      els.send.disabled = false;
    };
    localStream.getAudioTracks().forEach((t) => pc.addTrack(t, localStream));
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      // Chrome feeds WebAudio from a remote stream only while a media element plays it.
      els.audio.srcObject = stream;
      els.audio.play().catch(() => {});
      if (audioCtx && !remoteAnalyser) remoteAnalyser = analyserFor(stream);
    };
    pc.onconnectionstatechange = () => {
      if (peer !== pc) return;
      hook.connectionState = pc.connectionState;
      if (pc.connectionState === "failed") {
        showNotice("connection-failed", "The call's connection failed (no network path to the server; a TURN server may be needed).");
        hangUp("failed");
      } else if (pc.connectionState === "disconnected") {
        els.agentLabel.textContent = "Connection interrupted… trying to recover.";
      }
    };
    setCallUi(true);
    els.call.disabled = false;

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (peer !== pc) return; // hung up while gathering
      const answer = await postOffer(pc.localDescription);
      if (peer !== pc) {
        if (answer.call_id) deleteCall(answer.call_id);
        return;
      }
      hook.callId = answer.call_id || null;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (e) {
      if (peer !== pc) return;
      const [kind, text] = e.status !== undefined || e.code ? offerErrorNotice(e) : ["offer-failed", `Call set-up failed: ${e.message}`];
      showNotice(kind, text);
      hangUp("failed", { keepNotice: true });
      return;
    }
    timers.push(setInterval(updateLevels, LEVEL_INTERVAL_MS));
    timers.push(setInterval(statsTick, PLAYOUT_INTERVAL_MS));
    timers.push(setInterval(() => renderDiagnostics(hook.lastStats), STATS_INTERVAL_MS));
  }

  function deleteCall(callId, keepalive = false) {
    return fetch(`calls/${encodeURIComponent(callId)}`, {
      method: "DELETE",
      headers: authHeaders(),
      keepalive,
    }).catch(() => {});
  }

  function hangUp(reason, { keepNotice = false } = {}) {
    if (!pc) return Promise.resolve();
    const callId = hook.callId;
    const peer = pc;
    const channel = dc;
    timers.forEach(clearInterval);
    timers = [];
    pc = null;
    dc = null;
    // Tell the server first, then close our side: closing first makes the
    // server drop the call on its own and the DELETE find nothing.
    const deleted = callId ? deleteCall(callId) : Promise.resolve();
    const closePeer = () => {
      try {
        channel && channel.close();
      } catch {
        /* already closed */
      }
      peer.close();
    };
    Promise.race([deleted, new Promise((r) => setTimeout(r, 2000))]).then(closePeer);
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    localStream = null;
    [micAnalyser, remoteAnalyser].forEach((a) => a && a.source.disconnect());
    micAnalyser = null;
    remoteAnalyser = null;
    els.audio.srcObject = null;
    prevJitter = null;
    hook.connectionState = "closed";
    hook.callId = null;
    hook.micLevel = 0;
    hook.remoteLevel = 0;
    updateLevelsIdle();
    setCallUi(false);
    setState(reason === "hung up" ? "ended" : "idle");
    if (!keepNotice && reason === "hung up") showNotice(null);
    renderDiagnostics(hook.lastStats);
    return deleted;
  }

  function updateLevelsIdle() {
    els.micLevel.style.width = "0%";
    els.orb.classList.remove("talking");
    els.orb.style.setProperty("--level", "0");
  }

  function insecureText() {
    return "This page is not a secure context (plain http on an address other than localhost), " +
      "so the browser hides the microphone. Open it over HTTPS (rtc-agent serve --https) or via localhost.";
  }

  // ---- wiring ---------------------------------------------------------------

  els.call.addEventListener("click", () => (inCall() ? hangUp("hung up") : startCall()));

  els.mute.addEventListener("click", () => {
    if (!localStream) return;
    muted = !muted;
    localStream.getAudioTracks().forEach((t) => (t.enabled = !muted));
    els.mute.setAttribute("aria-pressed", String(muted));
    els.mute.textContent = muted ? "Unmute" : "Mute";
  });

  els.mic.addEventListener("change", async () => {
    if (!pc || !localStream) return;
    try {
      const next = await navigator.mediaDevices.getUserMedia(micConstraints());
      const track = next.getAudioTracks()[0];
      track.enabled = !muted;
      const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
      if (sender) await sender.replaceTrack(track);
      localStream.getTracks().forEach((t) => t.stop());
      localStream = next;
      if (micAnalyser) micAnalyser.source.disconnect();
      micAnalyser = audioCtx ? analyserFor(localStream) : null;
    } catch (err) {
      const [kind, text] = micErrorText(err);
      showNotice(kind, text);
    }
  });

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (sendText(els.text.value)) els.text.value = "";
  });

  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", listMicrophones);
  }

  // Free the server's slot when the tab goes away mid-call.
  window.addEventListener("pagehide", () => {
    if (hook.callId) deleteCall(hook.callId, true);
  });

  (async () => {
    setState("idle");
    const ok = await loadConfig();
    if (!mediaAvailable()) {
      showNotice("insecure", insecureText());
    } else {
      els.call.disabled = !ok;
      await listMicrophones();
    }
    document.body.dataset.ready = "1"; // for automation: set-up finished
  })();
})();
