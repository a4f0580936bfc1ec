// The caller's side of a call: places and ends it, ties the microphone, the
// Peer, the conversation and the status together, brings the call back on a new
// connection when its network path dies (resume), and keeps the record that
// tests and devtools read (`hook`, exposed as window.rtcAgent by main.js).

import { NoPathError, OfferError, Peer, deleteCall, fetchConfig } from "./peer.js";
import * as audio from "./audio.js";
import { Conversation } from "./conversation.js";
import {
  CallState, CallerType, MAX_TEXT_CHARS, PageState, ServerType,
  isCallState, parseServerMessage, pingMessage, playoutMessage, textMessage,
} from "./protocol.js";
import * as ui from "./ui.js";

const PLAYOUT_INTERVAL_MS = 500;
const STATS_INTERVAL_MS = 1000;
const LEVEL_INTERVAL_MS = 50;
const MAX_EVENTS = 2000;
// A path that dies without closing anything (a phone leaving Wi-Fi, a pulled
// cable, a killed server) sends no close: Chromium calls ICE "disconnected" only
// after ~2.5-7.5 s and "failed" after ~17 s. The server's audio never pauses
// (a silence packet every 20 ms between replies), so a second without a new
// packet is the earliest sign, checked every LIVENESS_INTERVAL_MS from getStats.
const LIVENESS_INTERVAL_MS = 250;
const STALL_MS = 1000;
// Right after the browser reports a network change, a short gap is enough: the
// path the call used has most likely gone with the old network.
const NETWORK_CHANGE_WINDOW_MS = 3000;
const STALL_AFTER_NETWORK_CHANGE_MS = 300;
// The data channel's own check: a ping every second, answered by `pong`.
const PING_INTERVAL_MS = 1000;
const PONG_TIMEOUT_MS = 3000;
// ICE "disconnected" may heal by itself; this long, and the path counts as lost.
const ICE_DISCONNECTED_GRACE_MS = 1500;
// Resume attempts: the first at once, then these waits between attempts (the last
// repeats). A network coming (back) skips the wait.
const RESUME_BACKOFF_MS = [500, 1000, 2000, 4000];
// An answered attempt whose connection has not opened with `session.resumed` in
// this long is given up for the next one.
const RESUME_ATTEMPT_TIMEOUT_MS = 5000;
// Nothing was sent (no candidate yet) just after a network change: the browser
// may not have listed the new addresses yet, so look again soon.
const NO_PATH_RETRY_MS = 250;
const KICK_DEBOUNCE_MS = 30;
// The server starts its resume window when it notices the silence (2 s, call.py).
// The page tries a few seconds longer: it cannot know exactly when the server
// noticed, a late try only costs a 404 that says the call has ended, and giving
// up early would lose a call the server still held. (A network back just then
// needs ~1.5 s before Chromium offers its addresses, measured here.)
const SERVER_NOTICE_MS = 2000;
const RESUME_GRACE_MS = 5000;
// "Last turn" (see armTurn): the onset poll; a turn not answered in time is dropped.
const ONSET_POLL_MS = 20;
const TURN_TIMEOUT_MS = 30000;
const MAX_RECORDS = 50;
const CONFIG_WAIT_MS = 2000;
const CLOSE_AFTER_DELETE_MS = 2000;
// Barge-in (see muteStale): remote RMS above which reply audio is playing (the orb's
// "talking" level); how long audio already on its way stays stale after the server
// cut the reply (the playout delay plus a margin, within bounds); the longest a
// local mute may last whatever happens (a safety net: a long turn of the caller's
// is silent on the agent's side anyway).
const AUDIBLE_LEVEL = 0.01;
const STALE_MARGIN_MS = 100;
const STALE_MIN_MS = 150;
const STALE_MAX_MS = 1000;
const LOCAL_MUTE_MAX_MS = 10000;

const params = new URLSearchParams(location.search);
const conversation = new Conversation(ui.els.chat);
const levels = new audio.Levels(ui.els.micLevel, ui.els.orb);

// The call in progress, across its connections (null between calls):
// {id, token, windowS, stale: [Peer], resume: null | {...} (see startResume)}
let active = null;
let peer = null; // its current connection
let localStream = null;
let timers = [];
let muted = false;
let micEnded = false; // the microphone track ended under the call (another app took it)
let serverState = null; // the last CallState the server sent in this call
let connected = false; // the current connection came up
let packets = { count: 0, at: 0 }; // RTP packets received on it, and when that last grew
let pong = { waiting: null }; // when the oldest unanswered ping went out
let iceTimer = null;
let lastNetworkChange = -Infinity;
let lastPlayoutReport = 0;
let turn = null; // the turn being timed: {start, poll, lastPoll, quiet, gap}
let localMute = null; // the agent muted here on a barge-in: {record, state, staleUntil, timer}

// Everything a test (or a curious person in devtools) may want to read.
export const hook = {
  state: PageState.IDLE,
  config: null,
  get callId() {
    return active ? active.id : null; // the server's id, once it answered
  },
  backend: null,
  connectionState: "new",
  // {role, item_id, text, final, interrupted, typed, call, cut_off, heard_text?, unheard_text?}
  transcripts: conversation.transcripts,
  events: [], // every message received on `events`, in order (but pongs)
  sent: [], // every message sent on `events` (but playout reports and pings)
  tools: conversation.tools, // {call_id, name, arguments, ok, duration_ms, running, call}
  notice: null, // {kind, text, reason?}
  ended: null, // {reason, message}: the server's call.ended for the last call
  interrupted: null, // why the connection counts as interrupted: "audio", "ice", "channel", "pong", "offline"
  // The resume in progress (null when none), then kept in `resumes`. Times are
  // performance.now(): {why, lostAt (last packet), noticedAt, attempts: [{at,
  // answered?, error?}], connectedAt?, resumedAt?, audioAt? (first packet on the
  // new connection), outcome: "resumed" | "gave up" | "hung up", gaveUp?}
  resume: null,
  resumes: [],
  network: [], // [event, time, navigator.onLine]: online, offline, connection changes
  pongs: 0,
  channelRttMs: null, // the last ping's round trip over the data channel
  usage: null, // the server's last `usage` message
  calls: 0, // calls placed from this page
  lastTurnMs: null, // end of the caller's turn to the first reply audio (see armTurn)
  // The agent's audio muted on this page at a barge-in (see muteStale), one record
  // each, times performance.now(): {call, trigger: "user_speaking" | "text", before
  // (the server's state until then), arrivedAt (the message's arrival; for "text",
  // when it was sent), mutedAt, restoredAt, restoredBy: a CallState, "audio",
  // "timeout", "resume", "hangup", "new call"}. agentMuted: the <audio> element's
  // `muted` now.
  localMutes: [],
  get agentMuted() {
    return ui.remoteMuted();
  },
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
    lastTurnMs: hook.lastTurnMs, usage: hook.usage,
    resumes: active ? hook.resumes.filter((r) => r.call === hook.calls && r.outcome === "resumed").length : 0,
    bargeIn: active ? hook.localMutes.findLast((r) => r.call === hook.calls) : null,
  });
}

function pushBounded(list, item, max = MAX_RECORDS) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
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

// ---- barge-in: the agent's stale audio muted here ------------------------------------
//
// When the caller talks over the agent, the server drops the reply audio it still
// had queued and says `user_speaking`; what is already in the browser (in flight,
// in the jitter buffer, in the output device) is stale and would go on playing for
// tens of ms. So the page mutes the <audio> element at once (ui.muteRemote), in the
// data channel's handler before anything else, when the agent was speaking or its
// audio was audible, and likewise when the caller types over it (a typed message
// cuts the reply too). Nothing stale is sent after the cut, so the element is heard
// again once both (a) the audio on its way has drained (`staleUntil`: the playout
// delay and a margin after the server's word of the cut) and (b) the turn moved on:
// the state left user_speaking (thinking, speaking, listening), or the agent's
// track is still audible past (a): then it is not stale (a server run with barge-in
// off, --no-barge-in, keeps the agent talking) and must be heard. A `speaking`
// state (a new reply) restores at once. A hang-up, a resume or LOCAL_MUTE_MAX_MS
// ends any mute, and a new call starts unmuted (ui.unlockPlayback).

function staleMs() {
  const delay = typeof hook.lastPlayoutMs === "number" ? hook.lastPlayoutMs : 0;
  return Math.min(STALE_MAX_MS, Math.max(STALE_MIN_MS, delay + STALE_MARGIN_MS));
}

function agentAudible() {
  return serverState === CallState.SPEAKING || hook.remoteLevel > AUDIBLE_LEVEL;
}

/** Mute the agent here (see above); `at`: the arrival of the server's
 *  `user_speaking`, or when a typed message went out. */
function muteStale(trigger, at) {
  if (localMute) return; // muted already (a typed message, then speech): one mute
  ui.muteRemote(true);
  const mutedAt = performance.now();
  const record = {
    call: hook.calls, trigger, before: serverState, arrivedAt: at, mutedAt, restoredAt: null, restoredBy: null,
  };
  pushBounded(hook.localMutes, record);
  // A typed message: the server cuts the reply when the message reaches it and
  // answers with a state; until then it is a round trip away.
  const rtt = typeof hook.channelRttMs === "number" ? hook.channelRttMs : 0;
  localMute = {
    record,
    state: trigger === "text" ? null : CallState.USER_SPEAKING,
    staleUntil: at + staleMs() + (trigger === "text" ? rtt : 0),
    timer: null,
  };
  checkStale();
  renderDiagnostics();
}

/** The server's state while muted: its word of the cut for a typed message. */
function staleStateChanged(state, at) {
  const m = localMute;
  if (!m) return;
  if (m.state === null) m.staleUntil = at + staleMs(); // sent after the cut, as the last stale audio
  m.state = state;
  if (state === CallState.SPEAKING) restoreAgent(state); // a new reply is on its way
  else checkStale();
}

/** Restore when the mute has done its work (see above); else look again later. */
function checkStale() {
  const m = localMute;
  if (!m) return;
  const now = performance.now();
  clearTimeout(m.timer);
  m.timer = null;
  if (now - m.record.mutedAt >= LOCAL_MUTE_MAX_MS) {
    restoreAgent("timeout");
    return;
  }
  if (now >= m.staleUntil) {
    if (m.state && m.state !== CallState.USER_SPEAKING) {
      restoreAgent(m.state);
      return;
    }
    if (hook.remoteLevel > AUDIBLE_LEVEL) {
      restoreAgent("audio");
      return;
    }
  }
  // the levels (every LEVEL_INTERVAL_MS) look again too; this one keeps the end
  // of the stale time and the limit when they do not run
  const next = now < m.staleUntil ? m.staleUntil : m.record.mutedAt + LOCAL_MUTE_MAX_MS;
  m.timer = setTimeout(checkStale, Math.max(0, next - now));
}

/** Let the agent be heard again; `by`: what ended the mute (for the record). */
function restoreAgent(by) {
  const m = localMute;
  if (!m) return;
  localMute = null;
  clearTimeout(m.timer);
  ui.muteRemote(false);
  Object.assign(m.record, { restoredAt: performance.now(), restoredBy: by });
  if (!active || by === "hangup") return;
  renderDiagnostics();
  // iOS may have paused the element meanwhile (an interruption): as wake() does
  ui.resumePlayback().then((playing) => {
    if (!playing && active) showNotice(...ui.TAP_FOR_AUDIO_NOTICE);
  });
}

// ---- a connection that stalls or drops ------------------------------------------------

/** The call can come back on a new connection: the server gave a resume token
 *  and keeps a dropped call for a while (its /config's resumeWindowS). */
function resumable() {
  return !!(active && active.id && active.token && active.windowS > 0);
}

function connectionInterrupted(why) {
  if (!active || hook.interrupted) return;
  hook.interrupted = why;
  setState(PageState.CONNECTION_LOST);
  conversation.markCutOff();
}

function connectionRecovered() {
  if (!active || !hook.interrupted || active.resume) return;
  hook.interrupted = null;
  setState(serverState || CallState.LISTENING);
}

/** The connection is gone for good and the call cannot be resumed: end it on
 *  this side, saying so. */
function connectionGone(why) {
  if (!active) return;
  if (connected || active.token) {
    hook.interrupted = hook.interrupted || why;
    showNotice(...ui.CONNECTION_LOST_NOTICE);
    hangUp("lost", { keepNotice: true });
  } else {
    // never connected: no network path (the TURN hint applies)
    showNotice(...ui.CONNECTION_FAILED_NOTICE);
    hangUp("failed", { keepNotice: true });
  }
}

/**
 * A sign that the media path is gone: `hard` ones (ICE failed, the channel
 * closed) leave no doubt, soft ones (no audio, no pong, ICE disconnected for a
 * while, offline) might heal. A resumable call goes to a new connection on
 * either; one that cannot be resumed shows the interruption on a soft sign, as
 * before, and ends on a hard one.
 */
function pathLost(why, hard) {
  if (!active || active.resume) return;
  if (!resumable()) {
    if (hard) connectionGone(why);
    else connectionInterrupted(why);
    return;
  }
  startResume(why);
}

/** From each stats sample: is audio still arriving? */
function checkLiveness(stats) {
  const now = performance.now();
  if (stats.packetsReceived > packets.count) packets = { count: stats.packetsReceived, at: now };
  if (packets.count && typeof stats.lastPacketAgeMs === "number") packets.at = now - stats.lastPacketAgeMs;
  if (!packets.count || !connected || active.resume) return; // set-up is not a stall
  const limit = now - lastNetworkChange < NETWORK_CHANGE_WINDOW_MS ? STALL_AFTER_NETWORK_CHANGE_MS : STALL_MS;
  if (now - packets.at >= limit) pathLost("audio", false);
  else if (hook.connectionState === "connected") connectionRecovered();
}

function onPeerState(state, p) {
  if (p !== peer || !active) return;
  hook.connectionState = state;
  if (active.resume) {
    if (state === "connected") {
      connected = true;
      hook.resume.connectedAt = hook.resume.connectedAt || performance.now();
    } else if (state === "failed" || state === "closed") {
      resumeAttemptFailed(p); // this attempt's connection will not come up: the next one, now
    }
    return;
  }
  if (state === "connected") {
    connected = true;
    if (performance.now() - packets.at < STALL_MS) connectionRecovered();
  } else if (state === "disconnected") {
    connectionInterrupted("ice");
  } else if (state === "failed" || state === "closed") {
    pathLost("ice", true);
  }
}

function onIceState(state, p) {
  if (p !== peer || !active || active.resume) return;
  clearTimeout(iceTimer);
  if (state === "disconnected") {
    iceTimer = setTimeout(() => {
      if (p === peer && p.iceConnectionState === "disconnected") pathLost("ice", false);
    }, ICE_DISCONNECTED_GRACE_MS);
  } else if (state === "failed") {
    pathLost("ice", true);
  }
}

function onChannelClose(p) {
  if (p !== peer || !active) return;
  if (active.resume) resumeAttemptFailed(p);
  else pathLost("channel", true);
}

/** online / offline / navigator.connection's change (main.js). */
export function networkChanged(kind) {
  const now = performance.now();
  lastNetworkChange = now;
  pushBounded(hook.network, [kind, now, navigator.onLine]);
  if (!active) return;
  if (kind === "offline") {
    pathLost("offline", false);
    return;
  }
  if (active.resume) {
    kickResume();
    return;
  }
  // a call that seems fine: look at its audio now, with the short threshold
  statsTick();
}

// ---- resume: the same call on a new connection --------------------------------------
//
// The old connection is dropped (not closed: closing sends a DTLS close, which
// the server takes as a hang-up), a new one is made with the same microphone
// track, and its offer goes to POST /calls/{id}/resume with the token. The
// conversation, the call id and the <audio> element stay. Once the server has
// answered an attempt it no longer counts the older connections, which are then
// closed. The call is given up at the end of the server's resume window, or at
// once when the server says the call has ended (404) or refuses the token (403).

function startResume(why) {
  const now = performance.now();
  // the path died when the last packet came, not when that was noticed
  const lostAt = packets.count ? Math.min(packets.at, now) : now;
  clearTimeout(iceTimer);
  disarmTurn();
  const deadline = lostAt + active.windowS * 1000 + SERVER_NOTICE_MS + RESUME_GRACE_MS;
  const mine = active;
  active.resume = {
    peer: null, // this attempt's connection
    offeredAt: null, // when its offer went out (which networks its candidates are from)
    posting: false, // its offer is being made or posted
    kicked: false,
    attempts: 0,
    timer: null,
    deadlineTimer: setTimeout(() => {
      if (active === mine && mine.resume) giveUp(ui.resumeWindowNotice(mine.windowS));
    }, Math.max(0, deadline - now)),
  };
  hook.resume = { call: hook.calls, why, lostAt, noticedAt: now, attempts: [], outcome: null };
  hook.interrupted = why;
  restoreAgent("resume"); // nothing more comes on the dead path; the new one starts clean
  conversation.markCutOff();
  ui.enableTextInput(false);
  setState(PageState.RESUMING);
  retire(peer);
  attemptResume();
}

/** Stop listening to a connection of this call; it is closed once safe (above). */
function retire(p) {
  if (!p || !active) return;
  p.drop();
  if (!active.stale.includes(p)) active.stale.push(p);
}

function closeStale(call) {
  call.stale.forEach((p) => p.close());
  call.stale = [];
}

async function attemptResume() {
  const mine = active;
  const r = mine && mine.resume;
  if (!r) return;
  clearTimeout(r.timer);
  r.timer = null;
  if (r.peer && r.posting && r.offeredAt !== null) {
    // its offer went out meanwhile: two in flight could reach the server in
    // either order, so the next one waits for this one's answer
    r.kicked = true;
    return;
  }
  r.kicked = false;
  if (r.peer) {
    // one that never offered can go at once; one that did waits (see retire)
    if (r.offeredAt === null) r.peer.close();
    else retire(r.peer);
    r.peer = null;
  }
  if (!navigator.onLine) {
    // Nothing to try on: `online` brings the next attempt (the timer is a fallback).
    // A connection made now would gather its candidates only once a network is
    // back, and then slowly (1.6 s measured in Chromium).
    r.timer = setTimeout(attemptResume, RESUME_BACKOFF_MS.at(-1));
    return;
  }
  r.attempts += 1;
  const record = { at: performance.now() };
  hook.resume.attempts.push(record);
  await freshConfig();
  if (active !== mine || mine.resume !== r || r.peer) return;
  const p = newPeer(mine.id);
  Object.assign(r, { peer: p, offeredAt: null, posting: true });
  peer = p;
  connected = false;
  packets = { count: 0, at: 0 };
  hook.connectionState = p.connectionState;
  try {
    const ok = await p.resume(authHeaders(), mine.token, () => {
      if (r.peer === p) r.offeredAt = record.offered = performance.now();
    });
    if (!ok || active !== mine || mine.resume !== r || r.peer !== p) return;
    record.answered = performance.now();
    r.posting = false;
    // The server now holds this connection as the call's and has let go of the
    // older ones: closing them can no longer end the call.
    closeStale(mine);
    if (r.kicked && r.offeredAt < lastNetworkChange) {
      attemptResume(); // its candidates predate the network it should use
      return;
    }
    r.timer = setTimeout(() => resumeAttemptFailed(p), RESUME_ATTEMPT_TIMEOUT_MS);
  } catch (e) {
    if (active !== mine || mine.resume !== r || r.peer !== p) return;
    r.posting = false;
    record.error = e instanceof OfferError ? `HTTP ${e.status} ${e.code || ""}`.trim() : e.name || String(e);
    if (e instanceof NoPathError) {
      // nothing reached the server: this connection can simply go
      p.close();
      r.peer = null;
    }
    if (e instanceof OfferError && e.status === 404) {
      giveUp(ui.resumeEndedNotice(e.message));
    } else if (e instanceof OfferError && e.status === 403) {
      giveUp(ui.resumeRefusedNotice(e.message));
    } else if (e instanceof OfferError && e.status === 401) {
      giveUp(ui.offerErrorNotice(e));
      ui.showTokenField();
    } else {
      const wait = e instanceof OfferError && e.retryAfter ? Number(e.retryAfter) * 1000 || 0 : 0;
      retryResume(wait, e instanceof NoPathError);
    }
  }
}

/** The attempt's connection failed or did not open in time: on to the next. */
function resumeAttemptFailed(p) {
  const r = active && active.resume;
  if (!r || r.peer !== p || r.posting) return;
  clearTimeout(r.timer);
  const record = hook.resume.attempts.at(-1);
  if (record && !record.error) record.error = "no connection";
  retryResume(0, false);
}

function retryResume(atLeastMs, noPath) {
  const r = active.resume;
  let wait = RESUME_BACKOFF_MS[Math.min(r.attempts, RESUME_BACKOFF_MS.length) - 1];
  if (r.kicked) wait = 0; // a network came while this attempt ran
  // nothing was sent: just after a network change, the browser may still be listing it
  if (noPath && navigator.onLine && performance.now() - lastNetworkChange < NETWORK_CHANGE_WINDOW_MS) {
    wait = NO_PATH_RETRY_MS;
  }
  wait = Math.max(wait, atLeastMs);
  clearTimeout(r.timer);
  r.timer = setTimeout(attemptResume, wait);
}

/** A network came (back) while resuming: try now rather than after the backoff,
 *  with a connection that can use it. */
function kickResume() {
  const r = active.resume;
  if (r.peer && r.offeredAt !== null && r.offeredAt >= lastNetworkChange) return; // offered on this network
  if (r.posting && r.offeredAt !== null) {
    r.kicked = true; // its offer is out: acted on when it is answered or fails
    return;
  }
  // waiting, or still gathering on the old networks; a network change comes as
  // several events (online, then connection changes): one attempt for them all
  clearTimeout(r.timer);
  r.timer = setTimeout(attemptResume, KICK_DEBOUNCE_MS);
}

/** `session.resumed` on the attempt's connection: the call is back. */
function onResumed(p) {
  const r = active.resume;
  if (!r || r.peer !== p) return;
  clearTimeout(r.timer);
  clearTimeout(r.deadlineTimer);
  closeStale(active);
  active.resume = null;
  const record = hook.resume;
  Object.assign(record, { resumedAt: performance.now(), outcome: "resumed" });
  pushBounded(hook.resumes, record);
  hook.resume = null;
  hook.interrupted = null;
  pong = { waiting: null };
  ui.enableTextInput(true);
  conversation.addNote(`Reconnected after ${((record.resumedAt - record.lostAt) / 1000).toFixed(1)} s`);
  // the server's `state` follows; until then, the last one it sent
  setState(serverState || CallState.LISTENING);
  renderDiagnostics();
}

function giveUp([kind, text]) {
  if (!active || !active.resume) return;
  Object.assign(hook.resume, { outcome: "gave up", gaveUp: performance.now(), notice: kind });
  showNotice(kind, text);
  // The server may still hold the call (its window is counted from its own
  // notice): the DELETE frees it. It is harmless when the call is over.
  hangUp("gave up", { keepNotice: true });
}

/** TURN credentials last minutes (the username starts with their expiry): fetch
 *  new ones for a resume when those of the call expire within a minute. */
async function freshConfig() {
  const servers = (hook.config && hook.config.iceServers) || [];
  const expiries = servers.map((s) => Number(String(s.username || "").split(":")[0])).filter((n) => n > 0);
  if (!expiries.length || Math.min(...expiries) * 1000 - Date.now() > 60000) return;
  try {
    // not long: a request stuck on the dead path must not hold the resume up
    const timeout = new Promise((resolve, reject) => setTimeout(() => reject(new Error("timeout")), CONFIG_WAIT_MS));
    hook.config = await Promise.race([fetchConfig(authHeaders()), timeout]);
  } catch {
    /* no network yet, or slow: the attempt goes on with what it has */
  }
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
    if (typeof m.resume_token === "string" && m.resume_token) active.token = m.resume_token;
    ui.showRecorded(m.recorded === true);
    if (hook.state === PageState.CONNECTING) setState(CallState.LISTENING);
  }],
  [ServerType.SESSION_RESUMED, (m, p) => onResumed(p)],
  [ServerType.STATE, (m, p, at) => {
    if (!isCallState(m.state)) return;
    const before = serverState;
    serverState = m.state;
    staleStateChanged(m.state, at);
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
  [ServerType.PONG, (m) => {
    pong = { waiting: null };
    hook.pongs += 1;
    if (typeof m.t === "number") hook.channelRttMs = Math.max(0, performance.now() - m.t);
  }],
  [ServerType.USAGE, (m) => {
    if (m.tokens && typeof m.tokens === "object") hook.usage = { tokens: m.tokens, cost_usd: m.cost_usd };
  }],
]);

function onServerMessage(data, from) {
  const at = performance.now();
  const m = parseServerMessage(data);
  if (!m) return;
  // A barge-in: the agent's audio still in the browser is stale. Muted first of all.
  // (Not when the server says the caller's voice does not cut the agent: /config's bargeIn.)
  if (m.type === ServerType.STATE && m.state === CallState.USER_SPEAKING && from === peer && active
      && !localMute && agentAudible() && !(hook.config && hook.config.bargeIn === false)) {
    muteStale(CallState.USER_SPEAKING, at); // the trigger, as recorded
  }
  if (m.type !== ServerType.PONG) pushBounded(hook.events, m, MAX_EVENTS);
  // A call already ended here (or a connection already left behind) still delivers
  // what was in flight until its peer closes: none of it may change the page.
  if (from !== peer || !active) return;
  const handle = handlers.get(m.type);
  if (handle) handle(m, from, at);
}

function send(message) {
  if (!peer || !active || !peer.send(message)) return false;
  if (message.type !== CallerType.PLAYOUT && message.type !== CallerType.PING) hook.sent.push(message);
  return true;
}

export function sendText(text) {
  text = String(text || "").trim().slice(0, MAX_TEXT_CHARS);
  if (!text) return false;
  const at = performance.now();
  if (!send(textMessage(text))) {
    showNotice(...ui.NOT_CONNECTED_NOTICE);
    return false;
  }
  // it cuts the reply playing (the server stops it): what is on its way is stale
  if (agentAudible()) muteStale("text", at);
  conversation.addTyped(text);
  armTurn();
  return true;
}

/** Every second: a ping; none answered for PONG_TIMEOUT_MS and the path is lost. */
function pingTick() {
  if (!active || active.resume || !peer || !peer.channelOpen) return;
  const now = performance.now();
  if (pong.waiting !== null && now - pong.waiting > PONG_TIMEOUT_MS) {
    pathLost("pong", false);
    return;
  }
  if (send(pingMessage(now)) && pong.waiting === null) pong.waiting = now;
}

// ---- levels and stats, while a call runs ------------------------------------------

function levelTick() {
  const { mic, remote } = levels.read();
  hook.micLevel = muted ? 0 : mic;
  hook.remoteLevel = remote;
  if (remote > hook.remotePeak) hook.remotePeak = remote;
  levels.draw(hook.micLevel, hook.remoteLevel);
  if (localMute) checkStale();
}

async function collectStats() {
  const p = peer;
  if (!p) return hook.lastStats;
  const stats = await p.stats();
  // a call hung up (or a connection replaced) meanwhile: not its figures any more
  if (p === peer) hook.lastStats = stats;
  return stats;
}

async function statsTick() {
  const current = peer;
  try {
    const stats = await collectStats();
    if (!stats || current !== peer || !active) return;
    checkLiveness(stats);
    const now = performance.now();
    if (now - lastPlayoutReport >= PLAYOUT_INTERVAL_MS - LIVENESS_INTERVAL_MS / 2) {
      lastPlayoutReport = now;
      hook.lastPlayoutMs = peer.playoutDelayMs(stats, audio.outputLatencyMs());
      send(playoutMessage(hook.lastPlayoutMs));
    }
  } catch {
    /* the peer connection closed between ticks */
  }
}

// ---- the call ------------------------------------------------------------------

/** A connection for the call: a new call's (callId null) or a resume's. */
function newPeer(callId) {
  const p = new Peer({
    iceServers: (hook.config && hook.config.iceServers) || [],
    relay: params.get("relay") === "1",
    stream: localStream,
    callId,
    onMessage: (data) => onServerMessage(data, p),
    onChannelOpen: () => {
      if (p === peer && active && !active.resume) ui.enableTextInput(true);
    },
    onChannelClose: () => onChannelClose(p),
    onRemoteTrack: (track) => onRemoteTrack(track, p),
    onConnectionState: (state) => onPeerState(state, p),
    onIceState: (state) => onIceState(state, p),
    onLateCandidate: (candidate) => onLateCandidate(candidate, p),
  });
  return p;
}

/** A resume attempt's connection found an address after its offer went out:
 *  Chromium lists a new network ~1.5 s after it appears (measured here), and an
 *  offer made meanwhile carries only the old, dead addresses. A new offer, now. */
function onLateCandidate(candidate, p) {
  const r = active && active.resume;
  if (!r || r.peer !== p || connected) return;
  networkChanged("candidate");
}

function onRemoteTrack(track, p) {
  if (p !== peer || !active) return;
  const record = hook.resume;
  if (record) {
    // a remote track starts muted and unmutes with its first packet
    const arrived = () => {
      if (p === peer && !record.audioAt) record.audioAt = performance.now();
    };
    if (!track.muted) arrived();
    else track.addEventListener("unmute", arrived, { once: true });
  }
  // The same <audio> element and stream go on playing (ui.playRemote); Chrome
  // feeds WebAudio from a remote track only while a media element plays it.
  ui.playRemote(track).then((playing) => {
    if (!playing && active) showNotice(...ui.TAP_FOR_AUDIO_NOTICE);
  });
  levels.watchRemote(new MediaStream([track]));
}

/** The microphone track ended under the call (iOS: another app or a phone call
 *  took it): the next tap opens it again. A track this page stops fires nothing. */
function watchMicrophone(stream) {
  stream.getAudioTracks().forEach((track) => {
    track.onended = () => {
      if (!active || !localStream || !localStream.getTracks().includes(track)) return;
      micEnded = true;
      showNotice(...ui.MIC_ENDED_NOTICE);
    };
  });
}

/**
 * The page came back (visibilitychange, pageshow, Page Lifecycle's resume) or
 * the person tapped: iOS suspends the AudioContext and may pause the <audio>
 * element behind a lock screen or a phone call; both need waking, and a tap is
 * what iOS accepts for it. Back from the background, the path is looked at again
 * at once (timers may have been frozen for a long while).
 */
export async function wake(tapped = false) {
  audio.wakeAudio();
  if (!active) return;
  if (tapped && micEnded) {
    micEnded = false;
    await switchMicrophone();
    if (hook.notice && hook.notice.kind === ui.MIC_ENDED_NOTICE[0]) showNotice(null);
  }
  const playing = await ui.resumePlayback();
  const askedForTap = hook.notice && hook.notice.kind === ui.TAP_FOR_AUDIO_NOTICE[0];
  if (playing && askedForTap) showNotice(null);
  else if (!playing && active && !askedForTap) showNotice(...ui.TAP_FOR_AUDIO_NOTICE);
  if (!tapped && active) statsTick();
}

export async function startCall() {
  if (active) return;
  showNotice(null);
  if (!audio.microphoneAvailable()) {
    showNotice(...ui.insecureNotice());
    return;
  }
  // Inside the tap, before any await: iOS unlocks audio only from a gesture.
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
  watchMicrophone(localStream);

  // a fresh call: nothing of the last one's state, stats or notice carries over
  restoreAgent("new call"); // hangUp did already, and ui.unlockPlayback unmuted the element
  serverState = null;
  connected = false;
  micEnded = false;
  packets = { count: 0, at: 0 };
  pong = { waiting: null };
  lastPlayoutReport = 0;
  Object.assign(hook, {
    ended: null, interrupted: null, backend: null, remotePeak: 0, calls: hook.calls + 1,
    resume: null, usage: null, channelRttMs: null,
  });
  conversation.startCall(new Date());
  const windowS = Number(hook.config && hook.config.resumeWindowS);
  const mine = { id: null, token: null, windowS: windowS > 0 ? windowS : 0, stale: [], resume: null };
  active = mine;
  const current = newPeer(null);
  peer = current;
  hook.connectionState = current.connectionState;
  ui.setCallUi(true);
  ui.enableCallButton(true);

  try {
    if (!(await current.connect(authHeaders()))) return; // hung up meanwhile
  } catch (e) {
    if (active !== mine) return;
    const [kind, text] = e instanceof OfferError ? ui.offerErrorNotice(e) : ui.setupErrorNotice(e);
    if (kind === "auth") ui.showTokenField();
    showNotice(kind, text);
    hangUp("failed", { keepNotice: true });
    return;
  }
  if (active !== mine) return;
  mine.id = current.id;
  timers.push(setInterval(levelTick, LEVEL_INTERVAL_MS));
  timers.push(setInterval(statsTick, LIVENESS_INTERVAL_MS));
  timers.push(setInterval(renderDiagnostics, STATS_INTERVAL_MS));
  timers.push(setInterval(pingTick, PING_INTERVAL_MS));
}

// The pill after a call: ended by either side, or lost with its connection.
const STATE_AFTER = {
  "hung up": PageState.ENDED, "by server": PageState.ENDED, "gave up": PageState.ENDED,
  lost: PageState.CONNECTION_LOST,
};

/**
 * End the call on this side. `reason`: "hung up" (the caller), "by server" (the
 * server's call.ended), "lost" (the connection dropped mid-call and the call
 * cannot be resumed), "gave up" (a resume did not succeed), "failed" (it never
 * came up). `tell: false` skips telling the server (it ended the call).
 */
export function hangUp(reason, { keepNotice = false, tell = true } = {}) {
  if (!active) return Promise.resolve();
  const ending = active;
  const last = peer;
  active = null;
  peer = null;
  timers.forEach(clearInterval);
  timers = [];
  clearTimeout(iceTimer);
  disarmTurn();
  restoreAgent("hangup");
  if (ending.resume) {
    clearTimeout(ending.resume.timer);
    clearTimeout(ending.resume.deadlineTimer);
    if (ending.resume.peer && ending.resume.peer !== last) ending.stale.push(ending.resume.peer);
    if (hook.resume && !hook.resume.outcome) hook.resume.outcome = reason;
    if (hook.resume) pushBounded(hook.resumes, hook.resume);
    hook.resume = null;
  }
  // the DELETE goes first (Peer.hangUp), then every connection of the call closes
  const deleted = last ? last.hangUp(authHeaders(), { tell }) : Promise.resolve();
  const stale = ending.stale.filter((p) => p !== last);
  Promise.race([deleted, new Promise((r) => setTimeout(r, CLOSE_AFTER_DELETE_MS))])
    .then(() => stale.forEach((p) => p.close()));
  if (localStream) localStream.getTracks().forEach((t) => t.stop());
  localStream = null;
  micEnded = false;
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
  Object.assign(hook, { lastStats: null, lastPlayoutMs: null, lastTurnMs: null, backend: null, usage: null });
  renderDiagnostics();
  return deleted;
}

export async function switchMicrophone() {
  const mine = active;
  if (!mine || !localStream) return;
  try {
    const next = await navigator.mediaDevices.getUserMedia(micConstraints());
    if (active !== mine) {
      next.getTracks().forEach((t) => t.stop()); // hung up meanwhile: keep no mic open
      return;
    }
    const track = next.getAudioTracks()[0];
    track.enabled = !muted;
    // the connection in use now; a resume in progress makes its next one with localStream
    if (peer) await peer.replaceAudioTrack(track);
    localStream.getTracks().forEach((t) => t.stop());
    localStream = next;
    levels.watchMic(localStream);
    watchMicrophone(localStream);
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
  return active !== null;
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
