// The conversation: a bubble per transcript item (streamed, then final), the
// caller's typed messages, tool rows and server errors. `transcripts` and
// `tools` are the plain records behind the bubbles (exposed as rtcAgent.*).

const ARGS_PREVIEW_CHARS = 120;

function describeArgs(args) {
  if (!args || typeof args !== "object") return "";
  const s = Object.entries(args).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
  return s.length > ARGS_PREVIEW_CHARS ? `${s.slice(0, ARGS_PREVIEW_CHARS - 3)}…` : s;
}

export class Conversation {
  #list;
  #items = new Map(); // item_id -> {entry, li}
  #toolRows = new Map(); // tool call_id -> {li, tool}
  #bubbles = new WeakMap(); // transcript entry -> its li (kept off the records)
  #claimed = new WeakSet(); // typed entries already taken over by their echo

  constructor(list) {
    this.#list = list;
    this.transcripts = []; // {role, item_id, text, final, interrupted, typed}
    this.tools = []; // {call_id, name, arguments, ok, duration_ms, running}
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

  #newEntry(role, itemId, text, typed, li) {
    const entry = { role, item_id: itemId, text, final: typed, interrupted: false, typed };
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

  /** What the caller typed, shown before the server echoes it. */
  addTyped(text) {
    const li = this.#addBubble("user", text, "typed");
    this.#newEntry("user", null, text, true, li);
  }

  onDelta(m) {
    const item = this.#item(m.role, m.item_id);
    if (item.entry.final) return;
    item.entry.text += m.delta || "";
    item.li.querySelector(".text").textContent = item.entry.text;
    this.#scroll();
  }

  onDone(m) {
    const item = this.#item(m.role, m.item_id, m.text);
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
    this.#scroll();
  }

  onToolStarted(m) {
    const tool = { call_id: m.call_id, name: m.name, arguments: m.arguments, running: true, ok: null, duration_ms: null };
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
