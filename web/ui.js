// The page's controls and status: the state pill and agent label, notices
// (and their wording), the call/mute/send controls, the microphone list, the
// token field, the remote <audio> element and the diagnostics panel.
// The conversation itself is conversation.js.

import { CallState, EndReason, PageState } from "./protocol.js";

const $ = (id) => document.getElementById(id);

export const els = {
  state: $("state"), notice: $("notice"), call: $("call"), mute: $("mute"), mic: $("mic"),
  micLevel: $("mic-level"), chat: $("chat"), form: $("text-form"), text: $("text"),
  send: $("send"), audio: $("remote"), orb: $("agent-indicator"), agentLabel: $("agent-label"),
  tokenRow: $("token-row"), token: $("token"), diag: $("diag"), diagnostics: $("diagnostics"),
  recorded: $("recorded"),
};

const PILL_LABELS = {
  [PageState.IDLE]: "Not connected",
  [PageState.CONNECTING]: "Connecting…",
  [CallState.LISTENING]: "Listening",
  [CallState.USER_SPEAKING]: "You are speaking",
  [CallState.THINKING]: "Thinking…",
  [CallState.SPEAKING]: "Agent speaking",
  [CallState.RECONNECTING]: "Reconnecting…",
  [PageState.ENDED]: "Call ended",
  [PageState.CONNECTION_LOST]: "Call interrupted",
  [PageState.RESUMING]: "Reconnecting…",
};

const AGENT_LABELS = {
  [PageState.IDLE]: "Tap Call and talk to the agent.",
  [PageState.CONNECTING]: "Connecting…",
  [CallState.LISTENING]: "Go ahead, I'm listening.",
  [CallState.USER_SPEAKING]: "Listening to you…",
  [CallState.THINKING]: "Thinking…",
  [CallState.SPEAKING]: "Speaking… (talk to interrupt)",
  [CallState.RECONNECTING]: "The agent's connection dropped; reconnecting…",
  [PageState.ENDED]: "Call ended. Tap Call to start again.",
  [PageState.CONNECTION_LOST]: "The connection to the server was interrupted; waiting for it…",
  [PageState.RESUMING]: "Connection lost; reconnecting to the same call. The agent cannot hear you until it is back.",
};

/** Show a CallState or PageState; body[data-state] drives the pill's colours. */
export function showState(state) {
  document.body.dataset.state = state;
  els.state.textContent = PILL_LABELS[state] || state;
  const label = AGENT_LABELS[state];
  if (label) els.agentLabel.textContent = label;
}

export const CUT_OFF_LABEL = "The call was cut off. Tap Call to start again.";

export function showAgentLabel(text) {
  els.agentLabel.textContent = text;
}

/** Show a notice (kind goes to data-kind, an end reason to data-reason), or hide
 *  it with no kind; returns what is shown. */
export function showNotice(kind, text, reason = null) {
  els.notice.hidden = !kind;
  els.notice.dataset.kind = kind || "";
  els.notice.dataset.reason = (kind && reason) || "";
  // A first line is a headline: bold as a whole (::first-line would stop where it wraps).
  const [headline, ...rest] = String(text || "").split("\n");
  if (rest.length) {
    const strong = document.createElement("strong");
    strong.textContent = headline;
    els.notice.replaceChildren(strong, `\n${rest.join("\n")}`);
  } else {
    els.notice.textContent = text || "";
  }
  if (!kind) return null;
  return reason ? { kind, text, reason } : { kind, text };
}

// ---- notice wording: each returns [kind, text] -------------------------------

export function insecureNotice() {
  return ["insecure", "This page is not a secure context (plain http on an address other than localhost), " +
    "so the browser hides the microphone. Open it over HTTPS (rtc-agent serve --https) or via localhost."];
}

export function configNotice(err) {
  return ["config", `Could not load the server's settings (${err.message}). Is rtc-agent running?`];
}

export function micErrorNotice(err) {
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

/** Wording for an OfferError (the server's HTTP answer to the offer). */
export function offerErrorNotice(e) {
  const wait = e.retryAfter ? ` Try again in about ${e.retryAfter} s.` : " Try again in a moment.";
  if (e.code === "backend_unavailable") {
    return ["backend", `The agent's speech service is not available right now.${wait}`];
  }
  if (e.status === 503 || e.code === "at_capacity") {
    return ["capacity", `The agent is busy: every line is in use.${wait}`];
  }
  if (e.status === 429) {
    return ["rate-limited", `Too many call attempts from this network.${wait}`];
  }
  if (e.status === 401 || e.status === 403) {
    return ["auth", `The server refused the call (${e.message}). Check the access token.`];
  }
  if (e.status === 413) return ["offer-too-large", "The call set-up was too large for the server."];
  if (e.status) return ["offer-failed", `The server could not take the call: ${e.message}`];
  return ["offer-failed", `Could not reach the server: ${e.message}`];
}

export function setupErrorNotice(e) {
  return ["offer-failed", `Call set-up failed: ${e.message}`];
}

export const CONNECTION_FAILED_NOTICE = ["connection-failed",
  "The call's connection failed (no network path to the server; a TURN server may be needed)."];
// A call that had connected and then lost its connection: a network path existed,
// so the TURN hint above would mislead (the server stopped, or the network dropped).
export const CONNECTION_LOST_NOTICE = ["connection-lost",
  "The connection to the server was lost mid-call (the server stopped or the network dropped). " +
  "Tap Call to try again."];

// Giving up on bringing a call back (call.js, resume): each returns [kind, text];
// the first line is the headline.
export function resumeWindowNotice(windowS) {
  return ["resume-failed", "Could not reconnect: the call has ended.\n" +
    `The network did not come back within the ${Math.round(windowS)} s the server keeps a dropped call. ` +
    "The conversation is kept below; tap Call to start a new one."];
}

/** The server answered the resume 404: the call is over; its message says so. */
export function resumeEndedNotice(message) {
  const detail = typeof message === "string" && message.trim() ? message.trim() : "This call has ended.";
  return ["resume-failed", `Could not reconnect: the server had already ended the call.\n${detail}`];
}

/** 403: the server would not let this page take the call back. */
export function resumeRefusedNotice(message) {
  return ["resume-failed", "Could not reconnect: the server refused to resume this call " +
    `(${message}). Tap Call to start a new one.`];
}

export const TAP_FOR_AUDIO_NOTICE = ["tap-for-audio",
  "The browser paused the agent's audio. Tap anywhere on the page to hear it again."];
export const MIC_ENDED_NOTICE = ["mic-ended",
  "The microphone stopped (another app may have taken it). Tap anywhere on the page to turn it back on."];

const END_HEADLINES = {
  [EndReason.HANGUP]: "The server ended the call.",
  [EndReason.UPSTREAM_FAILED]: "Call ended: the agent's speech service failed.",
  [EndReason.SERVER_SHUTDOWN]: "Call ended: the server is shutting down.",
  [EndReason.MAX_DURATION]: "Call ended: it reached its time limit.",
  [EndReason.CONNECT_TIMEOUT]: "Call ended: its connection was not set up in time.",
  [EndReason.IDLE]: "Call ended after a long silence.",
  [EndReason.ERROR]: "Call ended by an error on the server.",
};

/** Wording for `call.ended`: a headline for the reason on the first line (the notice
 *  keeps line breaks), then the server's own sentence, which names what failed (for
 *  a refused key, the service's HTTP status and message). */
export function callEndedNotice(reason, message) {
  const headline = END_HEADLINES[reason] || "The server ended the call.";
  const detail = typeof message === "string" ? message.trim() : "";
  return ["call-ended", detail ? `${headline}\n${detail}` : headline];
}
export const NOT_CONNECTED_NOTICE = ["not-connected", "Not connected: start a call to send messages."];

// ---- controls ------------------------------------------------------------------

export function enableCallButton(enabled) {
  els.call.disabled = !enabled;
}

/** The server records this call (--record-dir): say so for as long as it lasts. */
export function showRecorded(recorded) {
  els.recorded.hidden = !recorded;
}

export function setCallUi(active) {
  els.call.textContent = active ? "Hang up" : "Call";
  els.call.classList.toggle("danger", active);
  els.call.classList.toggle("primary", !active);
  els.mute.disabled = !active;
  if (!active) enableTextInput(false); // on: once the data channel opens (call.js)
  if (!active) {
    showMuted(false);
    showRecorded(false);
  }
}

export function enableTextInput(enabled) {
  els.text.disabled = !enabled;
  els.send.disabled = !enabled;
}

export function showMuted(muted) {
  els.mute.setAttribute("aria-pressed", String(muted));
  els.mute.textContent = muted ? "Unmute" : "Mute";
}

export function typedText() {
  return els.text.value;
}

export function clearTypedText() {
  els.text.value = "";
}

/** Fill the microphone list, keeping the choice when that device is still there. */
export function renderMicrophones(mics) {
  const chosen = els.mic.value;
  els.mic.replaceChildren(new Option("Default microphone", ""));
  mics.forEach((d, i) => els.mic.add(new Option(d.label || `Microphone ${i + 1}`, d.deviceId)));
  if ([...els.mic.options].some((o) => o.value === chosen)) els.mic.value = chosen;
}

export function selectedMic() {
  return els.mic.value;
}

export function showTokenField() {
  els.tokenRow.hidden = false;
}

export function tokenValue() {
  return els.token.value.trim();
}

// ---- remote audio ----------------------------------------------------------------
//
// One <audio> element (playsinline) and one MediaStream play the agent for the
// whole call. iOS Safari lets an element play sound only once a tap has started
// it; a resumed call's new track goes into the same stream of the same element,
// so it plays without another tap.

let playback = null; // the call's MediaStream in the <audio> element

/** Start the <audio> element inside the tap (iOS); the agent's track comes later. */
export function unlockPlayback() {
  playback = new MediaStream();
  els.audio.srcObject = playback;
  els.audio.muted = false;
  els.audio.play().catch(() => {});
}

/** Play the agent's (new) track: add it before taking the old one out, so the
 *  stream never empties (an empty stream ends the element's playback). Resolves
 *  false when the browser refused to play (it wants a tap first). */
export async function playRemote(track) {
  if (!playback) playback = new MediaStream();
  if (!playback.getTrackById(track.id)) playback.addTrack(track);
  playback.getAudioTracks().forEach((t) => t !== track && playback.removeTrack(t));
  if (els.audio.srcObject !== playback) els.audio.srcObject = playback;
  return resumePlayback();
}

/** play() if the element stopped (iOS pauses it on interruptions). */
export async function resumePlayback() {
  if (!playback || !els.audio.paused) return true;
  try {
    await els.audio.play();
    return true;
  } catch {
    return false;
  }
}

export function stopRemote() {
  playback = null;
  els.audio.srcObject = null;
  els.audio.muted = false; // never carried into the next call
}

/**
 * Silence the agent here, at once, or let it be heard again (call.js, on a
 * barge-in: the audio already in the browser's buffers is stale). The element's
 * `muted`, not `volume`: iOS Safari ignores `volume` set by a script (it stays 1),
 * while `muted` takes effect at the element's output in Chromium and Safari alike.
 * The element keeps playing (neither paused nor emptied), so iOS's play()-from-a-tap
 * state and a resumed call's track are untouched, and the levels go on: WebAudio
 * reads the track, not the element. The caller's own Mute is the microphone's.
 */
export function muteRemote(muted) {
  els.audio.muted = muted;
}

export function remoteMuted() {
  return els.audio.muted;
}

// ---- diagnostics -------------------------------------------------------------------

function fmt(v, unit, digits = 0) {
  return typeof v === "number" && isFinite(v) ? `${v.toFixed(digits)} ${unit}` : "–";
}

/** Fill the panel from Peer.stats() output (or null) and the call's identity;
 *  with no stats and no call it shows "–" everywhere (the reset after a hang-up). */
export function renderDiagnostics(s, { playoutMs, callId, backend, lastTurnMs, resumes, usage, bargeIn }) {
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
  set("playout", fmt(playoutMs, "ms") + describeBargeIn(bargeIn));
  set("turn", fmt(lastTurnMs, "ms"));
  set("call", callId
    ? `${callId}${backend ? ` · ${backend}` : ""}${resumes ? ` · resumed ×${resumes}` : ""}`
    : "–");
  set("usage", describeUsage(usage));
}

/** After the playout delay: the agent muted here on a barge-in (call.js), now or
 *  last in this call, and how soon after the server's `user_speaking` it was. */
function describeBargeIn(mute) {
  if (!mute) return "";
  const took = `${(mute.mutedAt - mute.arrivedAt).toFixed(1)} ms`;
  return mute.restoredAt === null ? ` · agent muted (barge-in, in ${took})` : ` · last barge-in muted in ${took}`;
}

/** The server's `usage` (the call's totals so far) in a line: tokens in and out,
 *  and the estimated cost when the server has a price table. */
export function describeUsage(usage) {
  const t = usage && usage.tokens;
  if (!t || typeof t !== "object") return "–";
  const n = (k) => (typeof t[k] === "number" && isFinite(t[k]) ? t[k] : 0);
  const count = (v) => v.toLocaleString("en-US");
  let line = `in ${count(n("input_text") + n("input_audio"))} · out ${count(n("output_text") + n("output_audio"))} tokens`;
  if (typeof usage.cost_usd === "number" && isFinite(usage.cost_usd)) line += ` · ≈ $${usage.cost_usd.toFixed(4)}`;
  return line;
}
