// The caller's side of a call: places and ends it, ties the microphone, the
// Peer, the conversation and the status together, and keeps the record that
// tests and devtools read (`hook`, exposed as window.rtcAgent by main.js).

import { OfferError, Peer, deleteCall, fetchConfig } from "./peer.js";
import * as audio from "./audio.js";
import { Conversation } from "./conversation.js";
import {
  CallState, CallerType, MAX_TEXT_CHARS, PageState, ServerType,
  isCallState, parseServerMessage, playoutMessage, textMessage,
} from "./protocol.js";
import * as ui from "./ui.js";

const PLAYOUT_INTERVAL_MS = 500;
const STATS_INTERVAL_MS = 1000;
const LEVEL_INTERVAL_MS = 50;
const MAX_EVENTS = 2000;

const params = new URLSearchParams(location.search);
const conversation = new Conversation(ui.els.chat);
const levels = new audio.Levels(ui.els.micLevel, ui.els.orb);

let call = null; // the current Peer, null between calls
let localStream = null;
let timers = [];
let muted = false;

// Everything a test (or a curious person in devtools) may want to read.
export const hook = {
  state: PageState.IDLE,
  config: null,
  get callId() {
    return call ? call.id : null; // the server's id, once it answered
  },
  backend: null,
  connectionState: "new",
  transcripts: conversation.transcripts, // {role, item_id, text, final, interrupted, typed}
  events: [], // every message received on `events`, in order
  sent: [], // every message sent on `events` (but playout reports)
  tools: conversation.tools, // {call_id, name, arguments, ok, duration_ms, running}
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

// ---- small helpers -------------------------------------------------------------

function setState(state) {
  hook.state = state;
  ui.showState(state);
}

function showNotice(kind, text) {
  hook.notice = ui.showNotice(kind, text);
}

function authHeaders() {
  // What the caller typed wins over ?token=, so a wrong link can be corrected.
  const token = ui.tokenValue() || params.get("token") || "";
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function renderDiagnostics() {
  ui.renderDiagnostics(hook.lastStats, {
    playoutMs: hook.lastPlayoutMs, callId: hook.callId, backend: hook.backend,
  });
}

async function loadConfig() {
  try {
    // Never wait forever (fetchConfig times out): without the settings the page still shows why.
    hook.config = await fetchConfig(authHeaders());
  } catch (err) {
    if (err instanceof OfferError && err.status === 401) {
      // a token is needed (or ?token= is wrong): ask for it; the call fetches again
      hook.config = { tokenRequired: true };
      ui.showTokenField();
      return true;
    }
    hook.config = { iceServers: [], tokenRequired: false };
    showNotice(...ui.configNotice(err));
    return false;
  }
  if (hook.config.tokenRequired && !params.get("token")) ui.showTokenField();
  return true;
}

export async function refreshMicrophones() {
  const mics = await audio.listMicrophones();
  if (mics) ui.renderMicrophones(mics);
}

function micConstraints() {
  return audio.micConstraints(ui.selectedMic(), params.get("raw") === "1");
}

// ---- the data channel ----------------------------------------------------------

const handlers = new Map([
  [ServerType.SESSION_READY, (m) => {
    hook.backend = m.backend || null;
    ui.showRecorded(m.recorded === true);
    if (hook.state === PageState.CONNECTING) setState(CallState.LISTENING);
  }],
  [ServerType.STATE, (m) => {
    if (isCallState(m.state)) setState(m.state);
  }],
  [ServerType.TRANSCRIPT_DELTA, (m) => conversation.onDelta(m)],
  [ServerType.TRANSCRIPT_DONE, (m) => conversation.onDone(m)],
  [ServerType.TOOL_STARTED, (m) => conversation.onToolStarted(m)],
  [ServerType.TOOL_FINISHED, (m) => conversation.onToolFinished(m)],
  [ServerType.ERROR, (m) => conversation.onError(m)],
]);

function onServerMessage(data) {
  const m = parseServerMessage(data);
  if (!m) return;
  hook.events.push(m);
  if (hook.events.length > MAX_EVENTS) hook.events.splice(0, hook.events.length - MAX_EVENTS);
  // anything else (pong, newer types) is recorded in events only
  const handle = handlers.get(m.type);
  if (handle) handle(m);
}

function send(message) {
  if (!call || !call.send(message)) return false;
  if (message.type !== CallerType.PLAYOUT) hook.sent.push(message);
  return true;
}

export function sendText(text) {
  text = String(text || "").trim().slice(0, MAX_TEXT_CHARS);
  if (!text) return false;
  if (!send(textMessage(text))) {
    showNotice(...ui.NOT_CONNECTED_NOTICE);
    return false;
  }
  conversation.addTyped(text);
  return true;
}

// ---- levels and stats, while a call runs ------------------------------------------

function levelTick() {
  const { mic, remote } = levels.read();
  hook.micLevel = muted ? 0 : mic;
  hook.remoteLevel = remote;
  if (remote > hook.remotePeak) hook.remotePeak = remote;
  levels.draw(hook.micLevel, hook.remoteLevel);
}

async function collectStats() {
  if (!call) return hook.lastStats;
  hook.lastStats = await call.stats();
  return hook.lastStats;
}

async function statsTick() {
  const current = call;
  try {
    const stats = await collectStats();
    if (!stats || current !== call) return;
    hook.lastPlayoutMs = call.playoutDelayMs(stats, audio.outputLatencyMs());
    send(playoutMessage(hook.lastPlayoutMs));
  } catch {
    /* the peer connection closed between ticks */
  }
}

// ---- the call ------------------------------------------------------------------

export async function startCall() {
  if (call) return;
  showNotice(null);
  if (!audio.microphoneAvailable()) {
    showNotice(...ui.insecureNotice());
    return;
  }
  audio.unlockAudio();
  ui.unlockPlayback();
  setState(PageState.CONNECTING);
  ui.enableCallButton(false);
  try {
    // Fresh settings for each call: TURN credentials last minutes, and with a
    // token only a valid one gets them (before the microphone is even asked for).
    hook.config = await fetchConfig(authHeaders());
  } catch (e) {
    const [kind, text] = e instanceof OfferError ? ui.offerErrorNotice(e) : ui.configNotice(e);
    if (kind === "auth") ui.showTokenField();
    showNotice(kind, text);
    setState(PageState.IDLE);
    ui.enableCallButton(true);
    return;
  }
  try {
    localStream = await navigator.mediaDevices.getUserMedia(micConstraints());
  } catch (err) {
    showNotice(...ui.micErrorNotice(err));
    setState(PageState.IDLE);
    ui.enableCallButton(true);
    return;
  }
  refreshMicrophones(); // labels are only readable once access was granted
  levels.watchMic(localStream);

  const current = new Peer({
    iceServers: (hook.config && hook.config.iceServers) || [],
    relay: params.get("relay") === "1",
    stream: localStream,
    onMessage: onServerMessage,
    onChannelOpen: () => ui.enableTextInput(true),
    onRemoteStream: (stream) => {
      // Chrome feeds WebAudio from a remote stream only while a media element plays it.
      ui.playRemote(stream);
      levels.watchRemote(stream);
    },
    onConnectionState: (state) => {
      hook.connectionState = state;
      if (state === "failed") {
        showNotice(...ui.CONNECTION_FAILED_NOTICE);
        hangUp("failed");
      } else if (state === "disconnected") {
        ui.showAgentLabel("Connection interrupted… trying to recover.");
      }
    },
  });
  call = current;
  hook.connectionState = current.connectionState;
  ui.setCallUi(true);
  ui.enableCallButton(true);

  try {
    if (!(await current.connect(authHeaders()))) return; // hung up meanwhile
  } catch (e) {
    if (current !== call) return;
    const [kind, text] = e instanceof OfferError ? ui.offerErrorNotice(e) : ui.setupErrorNotice(e);
    if (kind === "auth") ui.showTokenField();
    showNotice(kind, text);
    hangUp("failed", { keepNotice: true });
    return;
  }
  timers.push(setInterval(levelTick, LEVEL_INTERVAL_MS));
  timers.push(setInterval(statsTick, PLAYOUT_INTERVAL_MS));
  timers.push(setInterval(renderDiagnostics, STATS_INTERVAL_MS));
}

export function hangUp(reason, { keepNotice = false } = {}) {
  if (!call) return Promise.resolve();
  const ending = call;
  call = null;
  timers.forEach(clearInterval);
  timers = [];
  const deleted = ending.hangUp(authHeaders());
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  levels.stop();
  ui.stopRemote();
  hook.connectionState = "closed";
  hook.micLevel = 0;
  hook.remoteLevel = 0;
  muted = false;
  ui.setCallUi(false);
  setState(reason === "hung up" ? PageState.ENDED : PageState.IDLE);
  if (!keepNotice && reason === "hung up") showNotice(null);
  renderDiagnostics();
  return deleted;
}

export async function switchMicrophone() {
  const current = call;
  if (!current || !localStream) return;
  try {
    const next = await navigator.mediaDevices.getUserMedia(micConstraints());
    if (current !== call) {
      next.getTracks().forEach((t) => t.stop()); // hung up meanwhile: keep no mic open
      return;
    }
    const track = next.getAudioTracks()[0];
    track.enabled = !muted;
    await current.replaceAudioTrack(track);
    localStream.getTracks().forEach((t) => t.stop());
    localStream = next;
    levels.watchMic(localStream);
  } catch (err) {
    showNotice(...ui.micErrorNotice(err));
  }
}

export function toggleMute() {
  if (!localStream) return;
  muted = !muted;
  localStream.getAudioTracks().forEach((t) => (t.enabled = !muted));
  ui.showMuted(muted);
}

export function inCall() {
  return call !== null;
}

/** Free the server's slot when the tab goes away mid-call. */
export function releaseOnPageHide() {
  if (hook.callId) deleteCall(hook.callId, authHeaders(), true);
}

/** The page's set-up: settings, then the microphone list (or why there is none). */
export async function setUp() {
  setState(PageState.IDLE);
  const configured = await loadConfig();
  if (!audio.microphoneAvailable()) {
    showNotice(...ui.insecureNotice());
  } else {
    ui.enableCallButton(configured);
    await refreshMicrophones();
  }
}
