// One WebRTC connection to the server: the peer connection and its `events` data
// channel, the offer/answer over HTTP (a new call, or a resume of one), hang-up,
// and the connection's stats
// (for the diagnostics panel and the playout delay the server needs to cut a
// reply at what the caller actually heard). No DOM here.

import { EVENTS_CHANNEL, MAX_PLAYOUT_DELAY_MS } from "./protocol.js";

const ICE_GATHER_TIMEOUT_MS = 5000;
const RESUME_GATHER_QUIET_MS = 150;
const CLOSE_AFTER_DELETE_MS = 2000;
// A resume posted over a path that died meanwhile must not hold the next attempt up.
const RESUME_POST_TIMEOUT_MS = 8000;

/** The page has no network path at all: ICE gathered no candidate (no address, or
 *  the TURN server is out of reach with ?relay=1). Nothing was sent to the server. */
export class NoPathError extends Error {}

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

/** POST an offer (to `offer`, or to a call's resume route with its token); the
 *  server's answer, or an OfferError with its status, code and Retry-After. */
async function postOffer(url, offer, headers, extra = {}, timeoutMs = 0) {
  const res = await fetch(url, {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: offer.sdp, type: offer.type, ...extra }),
    signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
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

/**
 * Until ICE gathering completes (at most ICE_GATHER_TIMEOUT_MS: the server does
 * not trickle, so send what there is rather than hang). With `quietMs`, also once
 * a UDP candidate (a relay one when `needRelay`) has come and no other for that
 * long: after a network change Chromium may keep a vanished address on its list
 * and never complete gathering (seen here with make-before-break switches),
 * while the live host candidates all come within a few ms. TCP candidates do not
 * count: the server's ICE is UDP only.
 */
function waitForIceGathering(peer, { quietMs = 0, needRelay = false } = {}) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let quiet = null;
    let relay = false;
    const done = () => {
      clearTimeout(timer);
      clearTimeout(quiet);
      peer.removeEventListener("icegatheringstatechange", check);
      peer.removeEventListener("icecandidate", found);
      resolve();
    };
    const check = () => {
      if (peer.iceGatheringState === "complete") done();
    };
    const found = (ev) => {
      const c = ev.candidate;
      if (!quietMs || !c || (c.protocol && c.protocol !== "udp")) return;
      relay = relay || c.type === "relay";
      if (needRelay && !relay) return;
      clearTimeout(quiet);
      quiet = setTimeout(done, quietMs);
    };
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
    peer.addEventListener("icegatheringstatechange", check);
    peer.addEventListener("icecandidate", found);
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
    // how long ago the last audio packet came, on the browser's own clock (exact,
    // where polling packetsReceived sees a change once per poll at best)
    lastPacketAgeMs: inbound && inbound.lastPacketReceivedTimestamp && typeof inbound.timestamp === "number"
      ? Math.max(0, inbound.timestamp - inbound.lastPacketReceivedTimestamp) : null,
  };
}

/**
 * One connection of a call (a resumed call has several, one after the other).
 * Events arrive through the callbacks given to the constructor; they stop once
 * `drop()` or `hangUp()` has been called, except the messages the server sent
 * before its side closed (a last transcript), which are still delivered.
 */
export class Peer {
  #pc;
  #dc;
  #prevJitter = null; // {delay, count} of the last playout sample
  #turn = false; // a TURN server is configured (a resume's offer waits for its candidate)

  constructor({
    iceServers, relay, stream, callId = null, onMessage, onChannelOpen, onChannelClose, onRemoteTrack,
    onConnectionState, onIceState = () => {}, onLateCandidate = () => {},
  }) {
    this.id = callId; // the server's call id: known from the start when resuming
    this.closed = false; // hung up or dropped: no more state events
    this.#pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: relay ? "relay" : "all" });
    this.#turn = iceServers.some((s) => [].concat(s.urls || []).some((u) => /^turns?:/.test(u)));
    this.#dc = this.#pc.createDataChannel(EVENTS_CHANNEL, { ordered: true });
    this.#dc.onmessage = (ev) => onMessage(ev.data);
    this.#dc.onopen = () => {
      if (!this.closed) onChannelOpen();
    };
    // The server's side went away (its peer closed): often the first sign of it.
    this.#dc.onclose = () => {
      if (!this.closed) onChannelClose();
    };
    // The same microphone track goes into every connection of a call: a resume
    // asks for nothing again (no new permission prompt, no new tap).
    stream.getAudioTracks().forEach((t) => this.#pc.addTrack(t, stream));
    this.#pc.ontrack = (ev) => onRemoteTrack(ev.track);
    this.#pc.onconnectionstatechange = () => {
      if (!this.closed) onConnectionState(this.#pc.connectionState);
    };
    this.#pc.oniceconnectionstatechange = () => {
      if (!this.closed) onIceState(this.#pc.iceConnectionState);
    };
    // The server takes no trickled candidates: one found after the offer went out
    // (Chromium gathers again when its networks change) is a network the offer
    // does not cover, so the caller may want a new offer.
    this.#pc.onicecandidate = (ev) => {
      if (ev.candidate && ev.candidate.candidate && this.offered && !this.closed) onLateCandidate(ev.candidate);
    };
    this.offered = false;
  }

  get connectionState() {
    return this.#pc.connectionState;
  }

  get iceConnectionState() {
    return this.#pc.iceConnectionState;
  }

  /** Offer, gather, post to /offer, answer. False when hung up meanwhile; throws on failure. */
  async connect(headers) {
    const answer = await this.#negotiate("offer", headers, {}, null);
    if (!answer) return false;
    if (this.closed) {
      // the server made a call nobody wants any more: give the slot back
      if (answer.call_id) deleteCall(answer.call_id, headers);
      return false;
    }
    this.id = answer.call_id || null;
    await this.#pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return true;
  }

  /** The same call on this new connection: POST /calls/{id}/resume with the
   *  token session.ready gave. False when dropped meanwhile; throws NoPathError
   *  (nothing sent) or OfferError (the server's refusal) or a network error. */
  async resume(headers, token, onOffer = () => {}) {
    const url = `calls/${encodeURIComponent(this.id)}/resume`;
    const answer = await this.#negotiate(url, headers, { resume_token: token }, onOffer);
    if (!answer || this.closed) return false;
    await this.#pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return true;
  }

  /** `onOffer` (a resume's): told just before the offer goes out, once gathered. */
  async #negotiate(url, headers, extra, onOffer) {
    const pc = this.#pc;
    await pc.setLocalDescription(await pc.createOffer());
    // a resume is in a hurry, and comes just after a network change (see above)
    await waitForIceGathering(pc, onOffer ? { quietMs: RESUME_GATHER_QUIET_MS, needRelay: this.#turn } : {});
    if (this.closed) return null;
    this.offered = true;
    if (!onOffer) return postOffer(url, pc.localDescription, headers, extra);
    // No candidate: no network (yet). Posting would only make the server build a
    // connection that cannot work, and spend the caller's offer budget.
    if (!/^a=candidate:/m.test(pc.localDescription.sdp)) throw new NoPathError("no network path");
    onOffer();
    return postOffer(url, pc.localDescription, headers, extra, RESUME_POST_TIMEOUT_MS);
  }

  /** Send one caller message; false when the channel is not open. */
  send(message) {
    if (this.closed || this.#dc.readyState !== "open") return false;
    this.#dc.send(JSON.stringify(message));
    return true;
  }

  get channelOpen() {
    return !this.closed && this.#dc.readyState === "open";
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

  /**
   * Stop using this connection without ending the call: no DELETE and, above
   * all, no close yet. Closing sends a DTLS close, which the server takes as the
   * caller hanging up; so a dropped connection stays open (dead or not) until a
   * resume has been answered, when the server no longer counts it (`close()`).
   */
  drop() {
    this.closed = true;
  }

  /** Close the connection for good (see `drop()` for when that is safe). */
  close() {
    this.closed = true;
    try {
      this.#dc.close();
    } catch {
      /* already closed */
    }
    this.#pc.close();
  }

  /** End the call; resolves when the server has been told (`tell: false` when the
   *  server ended it itself: there is nothing left to delete). */
  hangUp(headers, { tell = true } = {}) {
    this.closed = true;
    // Tell the server first, then close our side: closing first makes the
    // server drop the call on its own and the DELETE find nothing.
    const deleted = this.id && tell ? deleteCall(this.id, headers) : Promise.resolve();
    Promise.race([deleted, new Promise((r) => setTimeout(r, CLOSE_AFTER_DELETE_MS))]).then(() => this.close());
    return deleted;
  }
}
