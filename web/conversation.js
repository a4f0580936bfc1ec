// The conversation: a divider per call, a bubble per transcript item (streamed,
// then final), the caller's typed messages, tool rows and server errors. The
// history stays across calls. `transcripts` and `tools` are the plain records
// behind the bubbles (exposed as rtcAgent.*).
//
// The page shows what the caller heard: the server sends an assistant reply's
// deltas as its audio plays (docs/data-channel.md), so they are appended as they
// come and nothing here runs ahead of them. An interrupted reply's final text may
// hold more than was heard; that rest is shown apart, struck through.

const ARGS_PREVIEW_CHARS = 120;

function describeArgs(args) {
  if (!args || typeof args !== "object") return "";
  const s = Object.entries(args).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
  return s.length > ARGS_PREVIEW_CHARS ? `${s.slice(0, ARGS_PREVIEW_CHARS - 3)}…` : s;
}

/** Where `text` was cut at `at`, moved back to the start of the word it splits. */
function wordBoundary(text, at) {
  if (at <= 0 || at >= text.length) return Math.max(0, Math.min(at, text.length));
  if (/\s/.test(text[at]) || /\s/.test(text[at - 1])) return at;
  const space = text.lastIndexOf(" ", at);
  return space < 0 ? 0 : space + 1;
}

/**
 * The heard and unheard parts of an interrupted reply's final `text`. Best first:
 * the server's `heard_text` (a prefix of `text`); else `heard_ms / audio_ms` of
 * the text, cut at a word (speech is spoken at a roughly even rate); else what
 * was streamed, as deltas follow the audio; else all of it counts as heard.
 */
export function heardSplit(m, streamed) {
  const text = typeof m.text === "string" ? m.text : streamed;
  let heard = text;
  if (typeof m.heard_text === "string" && text.startsWith(m.heard_text)) {
    heard = m.heard_text;
  } else if (typeof m.heard_ms === "number" && typeof m.audio_ms === "number" && m.audio_ms > 0) {
    const share = Math.max(0, Math.min(1, m.heard_ms / m.audio_ms));
    heard = text.slice(0, wordBoundary(text, Math.round(text.length * share)));
  } else if (streamed && text.startsWith(streamed)) {
    heard = streamed;
  }
  return { heard, unheard: text.slice(heard.length) };
}

function timeLabel(when) {
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class Conversation {
  #list;
  #items = new Map(); // item_id -> {entry, li}, of the current call
  #toolRows = new Map(); // tool call_id -> {li, tool}, of the current call
  #bubbles = new WeakMap(); // transcript entry -> its li (kept off the records)
  #claimed = new WeakSet(); // typed entries already taken over by their echo
  #divider = null; // the current call's divider
  #callNo = 0;

  constructor(list) {
    this.#list = list;
    this.transcripts = []; // {role, item_id, text, final, interrupted, typed, call, cut_off, heard_text?, unheard_text?}
    this.tools = []; // {call_id, name, arguments, ok, duration_ms, running, call}
  }

  #scroll() {
    this.#list.scrollTop = this.#list.scrollHeight;
  }

  #addBubble(role, text, extraClass) {
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
    this.#list.append(li);
    this.#scroll();
    return li;
  }

  #tag(li, cls, text) {
    if (li.querySelector(`.tag.${cls}`)) return;
    const tag = document.createElement("span");
    tag.className = `tag ${cls}`;
    tag.textContent = text;
    li.append(tag);
  }

  #newEntry(role, itemId, text, typed, li) {
    const entry = {
      role, item_id: itemId, text, final: typed, interrupted: false, typed,
      call: this.#callNo, cut_off: false,
    };
    this.transcripts.push(entry);
    this.#bubbles.set(entry, li);
    return entry;
  }

  #item(role, itemId, text) {
    let item = itemId ? this.#items.get(itemId) : undefined;
    if (item) return item;
    // A typed message is shown at once. The server echoes it as a user
    // transcript (with an empty item_id, or with the typed text): that echo
    // takes the typed bubble over instead of repeating it. Spoken transcripts
    // (real item ids, other text) always get their own bubble.
    if (role === "user") {
      const pending = this.transcripts.find(
        (t) => t.typed && !this.#claimed.has(t) && (!itemId || (text !== undefined && t.text === text)),
      );
      if (pending) {
        this.#claimed.add(pending);
        if (itemId) pending.item_id = itemId;
        item = { entry: pending, li: this.#bubbles.get(pending) };
        if (itemId) this.#items.set(itemId, item);
        return item;
      }
    }
    const li = this.#addBubble(role, "", "partial");
    item = { entry: this.#newEntry(role, itemId || null, "", false, li), li };
    if (itemId) this.#items.set(itemId, item);
    return item;
  }

  /** A new call: a divider with its time; item ids start afresh (a backend may reuse
   *  them), and no typed message of an earlier call can be taken for this one's echo. */
  startCall(when = new Date()) {
    this.#callNo += 1;
    this.#items = new Map();
    this.#toolRows = new Map();
    this.transcripts.forEach((t) => t.typed && this.#claimed.add(t));
    const li = document.createElement("li");
    li.className = "divider";
    li.setAttribute("role", "separator");
    li.dataset.call = String(this.#callNo);
    const time = document.createElement("time");
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    time.textContent = `Call · ${timeLabel(when)}`;
    li.setAttribute("aria-label", `Call at ${timeLabel(when)}`);
    li.append(time);
    this.#list.append(li);
    this.#divider = li;
    this.#scroll();
  }

  /** A line between the bubbles about the call itself (it came back on a new
   *  connection): not a message, so it is not in `transcripts`. */
  addNote(text) {
    const li = document.createElement("li");
    li.className = "note";
    li.setAttribute("role", "status");
    li.textContent = text;
    this.#list.append(li);
    this.#scroll();
  }

  /** The call is over: what was still streaming is final, marked cut off. A call that
   *  left nothing in the chat (refused, failed at once) gives its divider back. */
  endCall() {
    this.markCutOff(true);
    this.tools.forEach((tool) => {
      if (tool.running && tool.call === this.#callNo) {
        const row = this.#toolRows.get(tool.call_id);
        tool.running = false;
        if (row) {
          row.li.classList.remove("running");
          row.li.querySelector(".text").textContent = `${tool.name}: no result (the call ended)`;
        }
      }
    });
    if (this.#divider && this.#divider === this.#list.lastElementChild) this.#divider.remove();
    this.#divider = null;
  }

  /** Mark the current call's unfinished items as cut off by a lost connection. Not
   *  `final` unless the call is over: if the connection recovers, the next delta
   *  takes the mark away again. */
  markCutOff(final = false) {
    for (const entry of this.transcripts) {
      if (entry.final || entry.call !== this.#callNo) continue;
      const li = this.#bubbles.get(entry);
      entry.cut_off = true;
      li.classList.add("cut-off");
      this.#tag(li, "cut", "cut off");
      if (final) {
        entry.final = true;
        li.classList.remove("partial");
      }
    }
  }

  /** What the caller typed, shown before the server echoes it. */
  addTyped(text) {
    const li = this.#addBubble("user", text, "typed");
    this.#newEntry("user", null, text, true, li);
  }

  onDelta(m) {
    const item = this.#item(m.role, m.item_id);
    if (item.entry.final) return;
    if (item.entry.cut_off) {
      // the connection came back and the reply goes on
      item.entry.cut_off = false;
      item.li.classList.remove("cut-off");
      item.li.querySelector(".tag.cut")?.remove();
    }
    item.entry.text += m.delta || "";
    item.li.querySelector(".text").textContent = item.entry.text;
    this.#scroll();
  }

  onDone(m) {
    const item = this.#item(m.role, m.item_id, m.text);
    const { entry, li } = item;
    if (entry.typed && m.role === "user") {
      entry.final = true;
      return; // keep what the person typed
    }
    const streamed = entry.text;
    entry.text = typeof m.text === "string" ? m.text : entry.text;
    entry.final = true;
    entry.interrupted = !!m.interrupted;
    if (entry.cut_off) {
      entry.cut_off = false;
      li.classList.remove("cut-off");
      li.querySelector(".tag.cut")?.remove();
    }
    li.classList.remove("partial");
    li.classList.toggle("interrupted", entry.interrupted);
    const body = li.querySelector(".text");
    body.textContent = entry.text;
    if (entry.interrupted && m.role === "assistant") this.#showHeard(entry, body, heardSplit(m, streamed));
    if (entry.interrupted) this.#tag(li, "interrupted", "interrupted");
    if (!entry.text && m.role === "user") body.textContent = "(inaudible)";
    this.#scroll();
  }

  /** The heard part as it is; the rest struck through after a "not heard" label. */
  #showHeard(entry, body, { heard, unheard }) {
    entry.heard_text = heard;
    entry.unheard_text = unheard;
    if (!unheard) return;
    // the space between the parts is the label's: none struck through
    const shown = document.createElement("span");
    shown.className = "heard";
    shown.textContent = heard.trimEnd();
    const label = document.createElement("span");
    label.className = "unheard-label";
    label.textContent = "not heard";
    const rest = document.createElement("s");
    rest.className = "unheard";
    rest.textContent = unheard.trimStart();
    body.replaceChildren(shown, label, rest);
  }

  onToolStarted(m) {
    const tool = {
      call_id: m.call_id, name: m.name, arguments: m.arguments, running: true, ok: null,
      duration_ms: null, call: this.#callNo,
    };
    this.tools.push(tool);
    const li = this.#addBubble("tool", "", "running");
    li.querySelector(".who").textContent = "Tool";
    li.querySelector(".text").textContent = `${m.name}(${describeArgs(m.arguments)}) running…`;
    li.dataset.callId = m.call_id;
    this.#toolRows.set(m.call_id, { li, tool });
  }

  onToolFinished(m) {
    let row = this.#toolRows.get(m.call_id);
    if (!row) {
      // its start was missed (e.g. it began before the channel opened)
      this.onToolStarted({ call_id: m.call_id, name: m.name, arguments: {} });
      row = this.#toolRows.get(m.call_id);
    }
    Object.assign(row.tool, { running: false, ok: !!m.ok, duration_ms: m.duration_ms });
    row.li.classList.remove("running");
    row.li.classList.add(m.ok ? "ok" : "failed");
    const took = typeof m.duration_ms === "number" ? ` in ${Math.round(m.duration_ms)} ms` : "";
    row.li.querySelector(".text").textContent = `${m.name} ${m.ok ? "done" : "failed"}${took}`;
  }

  onError(m) {
    this.#addBubble("system", `Error: ${m.message || m.code}`, "error");
  }
}
