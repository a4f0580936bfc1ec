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
// A server that dies without closing anything (SIGKILL, a pulled cable) sends no
// close: Chromium calls ICE "disconnected" only after ~7.5 s and "failed" after
// ~17 s. The server's audio never pauses (aiortc sends a silence packet every
// 20 ms between replies), so a second without a new packet is the earliest
// sign, checked every LIVENESS_INTERVAL_MS from getStats.
const LIVENESS_INTERVAL_MS = 250;
const STALL_MS = 1000;
// "Last turn" (see armTurn): the onset poll; a turn not answered in time is dropped.
const ONSET_POLL_MS = 20;
const TURN_TIMEOUT_MS = 30000;

const params = new URLSearchParams(location.search);
const conversation = new Conversation(ui.els.chat);
const levels = new audio.Levels(ui.els.micLevel, ui.els.orb);

let call = null; // the current Peer, null between calls
let localStream = null;
let timers = [];
let muted = false;
let serverState = null; // the last CallState the server sent in this call
let connected = false; // this call's connection came up at least once
let packets = { count: 0, at: 0 }; // RTP packets received, and when that last grew
let lastPlayoutReport = 0;
let turn = null; // the turn being timed: {start, poll, lastPoll, quiet, gap}

// Everything a test (or a curious person in devtools) may want to read.
export const hook = {
  state: PageState.IDLE,
  config: null,
  get callId() {
    return call ? call.id : null; // the server's id, once it answered
  },
  backend: null,
  connectionState: "new",
  // {role, item_id, text, final, interrupted, typed, call, cut_off, heard_text?, unheard_text?}
  transcripts: conversation.transcripts,
  events: [], // every message received on `events`, in order
  sent: [], // every message sent on `events` (but playout reports)
  tools: conversation.tools, // {call_id, name, arguments, ok, duration_ms, running, call}
  notice: null, // {kind, text, reason?}
  ended: null, // {reason, message}: the server's call.ended for the last call
  interrupted: null, // why the connection counts as interrupted: "audio", "ice", "channel"
  calls: 0, // calls placed from this page
  lastTurnMs: null, // end of the caller's turn to the first reply audio (see armTurn)
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

function showNotice(kind, text, reason = null) {
  hook.notice = ui.showNotice(kind, text, reason);
}

function authHeaders() {
  // What the caller typed wins over ?token=, so a wrong link can be corrected.
  const token = ui.tokenValue() || params.get("token") || "";
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function renderDiagnostics() {
  ui.renderDiagnostics(hook.lastStats, {
    playoutMs: hook.lastPlayoutMs, callId: hook.callId, backend: hook.backend,
    lastTurnMs: hook.lastTurnMs,
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

// ---- the last turn's latency -------------------------------------------------------
//
// "Last turn" in the diagnostics: from the end of the caller's turn to the first
// reply audio, as the page measures it. The end of a spoken turn is when the
// server's `state` leaves user_speaking: its VAD decided the caller stopped, so the
// silence the VAD waits for before deciding (e.g. 500 ms) is not counted, and the
// state message's own trip is; a typed turn ends when the page sends it. The first
// reply audio is the first 128-sample block of the remote stream above about
// -46 dBFS after a silence (a reply still playing when the caller typed is not
// the answer), found in the remote analyser's window (polled every 20 ms over a
// 43 ms window, so no block is missed) and dated back by its place in it. That is
// where the <audio> element takes the audio: the output device's own latency (part
// of "Playout delay") is not included. A poll that came too late to see the whole
// gap (a throttled background tab) drops the turn rather than report a wrong figure.

function armTurn() {
  disarmTurn();
  const start = performance.now();
  turn = {
    start, lastPoll: start, quiet: false, gap: false, poll: setInterval(pollTurn, ONSET_POLL_MS),
  };
}

function disarmTurn() {
  if (turn) clearInterval(turn.poll);
  turn = null;
}

function pollTurn() {
  const now = performance.now();
  if (now - turn.start > TURN_TIMEOUT_MS) {
    disarmTurn();
    return;
  }
  if (now - turn.lastPoll > levels.remoteWindowMs()) turn.gap = true;
  turn.lastPoll = now;
  const onset = levels.remoteOnset();
  if (!turn.quiet) {
    // wait for a silent window: audio now is the previous reply's tail
    turn.quiet = onset === null;
    return;
  }
  if (onset === null) return;
  if (!turn.gap) {
    hook.lastTurnMs = Math.max(0, onset - turn.start);
    renderDiagnostics();
  }
  disarmTurn();
}

// ---- a connection that stalls or drops ------------------------------------------------

function connectionInterrupted(why) {
  if (!call || hook.interrupted) return;
  hook.interrupted = why;
  setState(PageState.CONNECTION_LOST);
  conversation.markCutOff();
}

function connectionRecovered() {
  if (!call || !hook.interrupted) return;
  hook.interrupted = null;
  setState(serverState || CallState.LISTENING);
}

/** The connection is gone for good: end the call on this side, saying so. */
function connectionGone(why) {
  if (!call) return;
  if (connected) {
    hook.interrupted = hook.interrupted || why;
    showNotice(...ui.CONNECTION_LOST_NOTICE);
    hangUp("lost", { keepNotice: true });
  } else {
    // never connected: no network path (the TURN hint applies)
    showNotice(...ui.CONNECTION_FAILED_NOTICE);
    hangUp("failed", { keepNotice: true });
  }
}

/** From each stats sample: is audio still arriving? */
function checkLiveness(stats) {
  const now = performance.now();
  if (stats.packetsReceived > packets.count) packets = { count: stats.packetsReceived, at: now };
  if (!packets.count || !connected) return; // set-up is not a stall
  const flowing = now - packets.at < STALL_MS;
  if (!flowing) connectionInterrupted("audio");
  else if (hook.connectionState === "connected") connectionRecovered();
}

// ---- the data channel ----------------------------------------------------------

function onCallEnded(m) {
  hook.ended = { reason: String(m.reason || ""), message: String(m.message || "") };
  showNotice(...ui.callEndedNotice(hook.ended.reason, hook.ended.message), hook.ended.reason);
  hangUp("by server", { keepNotice: true, tell: false });
}

const handlers = new Map([
  [ServerType.SESSION_READY, (m) => {
    hook.backend = m.backend || null;
    ui.showRecorded(m.recorded === true);
    if (hook.state === PageState.CONNECTING) setState(CallState.LISTENING);
  }],
  [ServerType.STATE, (m) => {
    if (!isCallState(m.state)) return;
    const before = serverState;
    serverState = m.state;
    if (m.state === CallState.USER_SPEAKING) disarmTurn();
    else if (before === CallState.USER_SPEAKING) armTurn();
    if (!hook.interrupted) setState(m.state);
  }],
  [ServerType.CALL_ENDED, onCallEnded],
  [ServerType.TRANSCRIPT_DELTA, (m) => conversation.onDelta(m)],
  [ServerType.TRANSCRIPT_DONE, (m) => conversation.onDone(m)],
  [ServerType.TOOL_STARTED, (m) => conversation.onToolStarted(m)],
  [ServerType.TOOL_FINISHED, (m) => conversation.onToolFinished(m)],
  [ServerType.ERROR, (m) => conversation.onError(m)],
]);

function onServerMessage(data, from) {
  const m = parseServerMessage(data);
  if (!m) return;
  hook.events.push(m);
  if (hook.events.length > MAX_EVENTS) hook.events.splice(0, hook.events.length - MAX_EVENTS);
  // A call already ended here still delivers what was in flight until its peer
  // closes: none of it may change the page (a state, or the next call's chat).
  if (from !== call) return;
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
  armTurn();
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
    checkLiveness(stats);
    const now = performance.now();
    if (now - lastPlayoutReport >= PLAYOUT_INTERVAL_MS - LIVENESS_INTERVAL_MS / 2) {
      lastPlayoutReport = now;
      hook.lastPlayoutMs = call.playoutDelayMs(stats, audio.outputLatencyMs());
      send(playoutMessage(hook.lastPlayoutMs));
    }
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

  // a fresh call: nothing of the last one's state, stats or notice carries over
  serverState = null;
  connected = false;
  packets = { count: 0, at: 0 };
  lastPlayoutReport = 0;
  Object.assign(hook, {
    ended: null, interrupted: null, backend: null, remotePeak: 0, calls: hook.calls + 1,
  });
  conversation.startCall(new Date());
  const current = new Peer({
    iceServers: (hook.config && hook.config.iceServers) || [],
    relay: params.get("relay") === "1",
    stream: localStream,
    onMessage: (data) => onServerMessage(data, current),
    onChannelOpen: () => ui.enableTextInput(true),
    onChannelClose: () => connectionGone("channel"),
    onRemoteStream: (stream) => {
      // Chrome feeds WebAudio from a remote stream only while a media element plays it.
      ui.playRemote(stream);
      levels.watchRemote(stream);
    },
    onConnectionState: (state) => {
      hook.connectionState = state;
      if (state === "connected") {
        connected = true;
        if (performance.now() - packets.at < STALL_MS) connectionRecovered();
      } else if (state === "disconnected") {
        connectionInterrupted("ice");
      } else if (state === "failed" || state === "closed") {
        connectionGone("ice");
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
  timers.push(setInterval(statsTick, LIVENESS_INTERVAL_MS));
  timers.push(setInterval(renderDiagnostics, STATS_INTERVAL_MS));
}

// The pill after a call: ended by either side, or lost with its connection.
const STATE_AFTER = {
  "hung up": PageState.ENDED, "by server": PageState.ENDED, lost: PageState.CONNECTION_LOST,
};

/**
 * End the call on this side. `reason`: "hung up" (the caller), "by server" (the
 * server's call.ended), "lost" (the connection dropped mid-call), "failed" (it
 * never came up). `tell: false` skips telling the server (it ended the call).
 */
export function hangUp(reason, { keepNotice = false, tell = true } = {}) {
  if (!call) return Promise.resolve();
  const ending = call;
  call = null;
  timers.forEach(clearInterval);
  timers = [];
  disarmTurn();
  const deleted = ending.hangUp(authHeaders(), { tell });
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  levels.stop();
  ui.stopRemote();
  conversation.endCall();
  hook.connectionState = "closed";
  hook.micLevel = 0;
  hook.remoteLevel = 0;
  muted = false;
  ui.setCallUi(false);
  setState(STATE_AFTER[reason] || PageState.IDLE);
  if (reason === "lost") ui.showAgentLabel(ui.CUT_OFF_LABEL); // no longer waiting for it
  if (!keepNotice && reason === "hung up") showNotice(null);
  // the panel describes the call in progress: after it, nothing (a stale
  // figure would pass for the next call's)
  Object.assign(hook, { lastStats: null, lastPlayoutMs: null, lastTurnMs: null, backend: null });
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
