// One WebRTC call to the server: the peer connection and its `events` data
// channel, the offer/answer over HTTP, hang-up, and the connection's stats
// (for the diagnostics panel and the playout delay the server needs to cut a
// reply at what the caller actually heard). No DOM here.

import { EVENTS_CHANNEL, MAX_PLAYOUT_DELAY_MS } from "./protocol.js";

const ICE_GATHER_TIMEOUT_MS = 5000;
const CLOSE_AFTER_DELETE_MS = 2000;

/** An HTTP refusal (of the offer, or of /config), with what the page needs to explain it. */
export class OfferError extends Error {
  constructor(message, { status, code = null, retryAfter = null }) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function refusal(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const err = (body && body.error) || {};
  return new OfferError(err.message || `HTTP ${res.status}`, {
    status: res.status,
    code: err.code || null,
    retryAfter: res.headers.get("Retry-After"),
  });
}

/**
 * The server's settings for a call, fetched afresh each time: its TURN credentials
 * are short-lived, and with --token only a valid token gets them. Throws an
 * OfferError (status 401) when a token is needed and missing or wrong.
 */
export async function fetchConfig(headers) {
  const res = await fetch("config", {
    cache: "no-store",
    headers,
    signal: AbortSignal.timeout(10000),
  });
  if (!res.ok) throw await refusal(res);
  const config = await res.json();
  if (config.tokenRequired && !Array.isArray(config.iceServers)) {
    throw new OfferError("an access token is required", { status: 401, code: "unauthorized" });
  }
  return config;
}

async function postOffer(offer, headers) {
  const res = await fetch("offer", {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
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
  throw new OfferError(err.message || `HTTP ${res.status}`, {
    status: res.status,
    code: err.code || null,
    retryAfter: res.headers.get("Retry-After"),
  });
}

/** Free the server's slot; `keepalive` lets the request outlive the page. */
export function deleteCall(callId, headers, keepalive = false) {
  return fetch(`calls/${encodeURIComponent(callId)}`, {
    method: "DELETE",
    headers,
    keepalive,
  }).catch(() => {});
}

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

/** The parts of a getStats() report the page shows and reports. */
function summarizeStats(report, connectionState) {
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
  return {
    connectionState,
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
}

/**
 * One call. Events arrive through the callbacks given to the constructor.
 * Connection-state changes stop once `hangUp()` has been called; messages the
 * server sent before its side closed are still delivered (a last transcript).
 */
export class Peer {
  #pc;
  #dc;
  #prevJitter = null; // {delay, count} of the last playout sample

  constructor({
    iceServers, relay, stream, onMessage, onChannelOpen, onChannelClose, onRemoteStream, onConnectionState,
  }) {
    this.id = null; // the server's call id, once it answered
    this.closed = false;
    this.#pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relay ? "relay" : "all" });
    this.#dc = this.#pc.createDataChannel(EVENTS_CHANNEL, { ordered: true });
    this.#dc.onmessage = (ev) => onMessage(ev.data);
    this.#dc.onopen = () => onChannelOpen();
    // The server's side went away (its peer closed): often the first sign of it.
    this.#dc.onclose = () => {
      if (!this.closed) onChannelClose();
    };
    stream.getAudioTracks().forEach((t) => this.#pc.addTrack(t, stream));
    this.#pc.ontrack = (ev) => onRemoteStream(ev.streams[0] || new MediaStream([ev.track]));
    this.#pc.onconnectionstatechange = () => {
      if (!this.closed) onConnectionState(this.#pc.connectionState);
    };
  }

  get connectionState() {
    return this.#pc.connectionState;
  }

  /** Offer, gather, post, answer. False when hung up meanwhile; throws on failure. */
  async connect(headers) {
    const pc = this.#pc;
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    if (this.closed) return false;
    const answer = await postOffer(pc.localDescription, headers);
    if (this.closed) {
      // the server made a call nobody wants any more: give the slot back
      if (answer.call_id) deleteCall(answer.call_id, headers);
      return false;
    }
    this.id = answer.call_id || null;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return true;
  }

  /** Send one caller message; false when the channel is not open. */
  send(message) {
    if (this.closed || this.#dc.readyState !== "open") return false;
    this.#dc.send(JSON.stringify(message));
    return true;
  }

  async stats() {
    return summarizeStats(await this.#pc.getStats(), this.#pc.connectionState);
  }

  /** Audio playout delay in ms: the jitter buffer's plus the output device's. */
  playoutDelayMs(stats, outputLatencyMs) {
    // The counters are cumulative: use the last interval's deltas, else the
    // running average (first sample, or nothing emitted since).
    const delay = stats.jitterBufferDelay;
    const count = stats.jitterBufferEmittedCount;
    let jb = 0;
    const prev = this.#prevJitter;
    if (prev && count > prev.count) jb = ((delay - prev.delay) / (count - prev.count)) * 1000;
    else if (count > 0) jb = (delay / count) * 1000;
    this.#prevJitter = { delay, count };
    return Math.max(0, Math.min(MAX_PLAYOUT_DELAY_MS, jb + outputLatencyMs));
  }

  async replaceAudioTrack(track) {
    const sender = this.#pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (sender) await sender.replaceTrack(track);
  }

  /** End the call; resolves when the server has been told (`tell: false` when the
   *  server ended it itself: there is nothing left to delete). */
  hangUp(headers, { tell = true } = {}) {
    this.closed = true;
    // Tell the server first, then close our side: closing first makes the
    // server drop the call on its own and the DELETE find nothing.
    const deleted = this.id && tell ? deleteCall(this.id, headers) : Promise.resolve();
    const close = () => {
      try {
        this.#dc.close();
      } catch {
        /* already closed */
      }
      this.#pc.close();
    };
    Promise.race([deleted, new Promise((r) => setTimeout(r, CLOSE_AFTER_DELETE_MS))]).then(close);
    return deleted;
  }
}
