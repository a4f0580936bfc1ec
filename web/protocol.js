// The caller protocol of the `events` data channel (docs/data-channel.md), as
// the page speaks it. The server's names live in rtc_agent/datachannel.py and
// tests/web/test_protocol_names.py compares the two, so keep each name block a
// flat `export const Name = Object.freeze({ KEY: "value", ... });` (or a frozen
// array) of double-quoted strings: the test reads them with a regex.

/** The agent's turn states, sent by the server in `state` messages (CallState). */
export const CallState = Object.freeze({
  LISTENING: "listening",
  USER_SPEAKING: "user_speaking",
  THINKING: "thinking",
  SPEAKING: "speaking",
  RECONNECTING: "reconnecting",
});

/** The page's own states around a call; the server never sends these. */
export const PageState = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  ENDED: "ended",
  // The connection stalled or dropped mid-call (no audio, ICE disconnected,
  // the data channel closed); the call may still recover from a stall.
  CONNECTION_LOST: "connection_lost",
  // The media path is gone and the page is bringing the same call back on a new
  // connection (POST /calls/{id}/resume); the conversation is kept meanwhile.
  RESUMING: "resuming",
});

/** Server -> caller message types the page acts on (a subset of SERVER_TYPES). */
export const ServerType = Object.freeze({
  SESSION_READY: "session.ready",
  STATE: "state",
  TRANSCRIPT_DELTA: "transcript.delta",
  TRANSCRIPT_DONE: "transcript.done",
  TOOL_STARTED: "tool.started",
  TOOL_FINISHED: "tool.finished",
  ERROR: "error",
  CALL_ENDED: "call.ended",
  SESSION_RESUMED: "session.resumed",
  PONG: "pong",
  USAGE: "usage",
});

/** Why the server ended a call (`call.ended`'s `reason`); the page words each one
 *  and shows the server's `message` with it. A reason it does not know is shown
 *  with the server's message alone. */
export const EndReason = Object.freeze({
  HANGUP: "hangup",
  UPSTREAM_FAILED: "upstream_failed",
  SERVER_SHUTDOWN: "server_shutdown",
  MAX_DURATION: "max_duration",
  CONNECT_TIMEOUT: "connect_timeout",
  IDLE: "idle",
  ERROR: "error",
});

/** Server types the page deliberately leaves alone (they still land in
 *  rtcAgent.events): none at present. */
export const IGNORED_SERVER_TYPES = Object.freeze([]);

/** Caller -> server message types the page sends (a subset of CALLER_TYPES). */
export const CallerType = Object.freeze({
  TEXT: "text",
  PLAYOUT: "playout",
  PING: "ping",
});

export const EVENTS_CHANNEL = "events";
// Limits the server enforces (datachannel.py); beyond them it answers `error`.
export const MAX_TEXT_CHARS = 4000;
export const MAX_PLAYOUT_DELAY_MS = 5000;

const CALL_STATES = new Set(Object.values(CallState));

export function isCallState(state) {
  return CALL_STATES.has(state);
}

/** One server message as an object, or null when it is not JSON or not an object. */
export function parseServerMessage(data) {
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return null;
  }
  return message && typeof message === "object" ? message : null;
}

export function textMessage(text) {
  return { type: CallerType.TEXT, text };
}

export function pingMessage(t) {
  return { type: CallerType.PING, t };
}

export function playoutMessage(delayMs) {
  return { type: CallerType.PLAYOUT, delay_ms: Math.round(delayMs) };
}
