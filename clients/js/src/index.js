// sse-edge-client: exactly-once, in-order delivery of an sse-edge stream, in browsers and
// Node >= 20 (global fetch with a streaming body). No dependencies.
//
// Invariants:
// 1. `onEvent` sees events in strictly increasing id order (ids compared as BigInt, kept as
//    decimal strings): an event whose id is not above the last delivered one is a duplicate
//    and is dropped (`latest` state may still take it, newest id wins).
// 2. After a `gap` notice (or `X-Gap-*` answer) nothing newer is delivered until every topic's
//    fill of the gap is merged; fills take only ids inside the gap and never `droppable`
//    events. What the node no longer holds is named to `onLost` (clamped to the gap).
// 3. `lastEventId` is the id of the last event delivered: the resume point to persist.
// 4. The client never reconnects faster than the node's `retry:`; failures back off
//    exponentially with full jitter between `backoffMinMs` and `backoffMaxMs`;
//    `server-shutdown` and `token-expired` are not failures.
// 5. After `close()` nothing is called back, no timer is pending, no request is open, and no
//    page listener, Web Lock or BroadcastChannel is left (page.js, shared.js).

import { EventStreamParser } from "./parser.js";
import { watchPage } from "./page.js";
import { Share, canShare, shareName } from "./shared.js";
import { polling } from "./polling.js";
import { SseEdgeError, big, isId } from "./common.js";

export { SseEdgeError };

const NOTICES = new Set(["gap", "server-shutdown", "system.overloaded", "system.recovered", "token-expired"]);

const DEFAULTS = {
  backoffMinMs: 500,
  backoffMaxMs: 30_000,
  heartbeatMs: 25_000,
  idleFactor: 3,
  pollIntervalMs: 2_000,
  overloadBackoffMinMs: 5_000,
  overloadBackoffMaxMs: 60_000,
  pollLimit: 1000,
};

/**
 * Subscribes to topics on an sse-edge node. See index.d.ts for the contract.
 * @param {string} baseUrl
 * @param {object} options
 */
export function subscribe(baseUrl, options) {
  return new Subscription(baseUrl, options);
}

class Subscription {
  constructor(baseUrl, options = {}) {
    if (!Array.isArray(options.topics) || options.topics.length === 0) {
      throw new TypeError("subscribe: options.topics must be a non-empty array");
    }
    if (options.lastEventId != null && !isId(String(options.lastEventId))) {
      throw new TypeError("subscribe: options.lastEventId must be a decimal string");
    }
    this.base = String(baseUrl).replace(/\/+$/, "");
    this.opts = { ...DEFAULTS, ...options };
    this.topics = [...new Set(options.topics)];
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.last = options.lastEventId != null ? String(options.lastEventId) : null;
    this.state = null;
    this.error = null;
    this.closed = false;
    this.retryMs = 0; // the node's `retry:`
    this.ending = null; // why the node said it closes this stream (server-shutdown, token-expired)
    this.failures = 0;
    this.stream = null; // AbortController of the open stream
    this.timers = new Set();
    this.pending = new Map(); // id -> event, held back while fills run (or while polling)
    this.fills = 0;
    this.polling = null; // { cursors, horizon, until, backoff }
    this.overloadBackoff = this.opts.overloadBackoffMinMs;
    this.latestState = new Map();
    this.queue = [];
    this.waiters = [];
    this.iterating = false;
    this.requests = new Set(); // AbortControllers of polls and fills
    this.reconnectTimer = null; // a reconnect waiting for its backoff or the node's retry:
    this.asleep = false; // the stream was closed while the page was hidden (page.js)
    // Shared between tabs: the stream starts when this tab takes the lock (shared.js).
    this.share = options.shared && canShare() ? new Share(this, shareName(this.base, this.topics)) : null;
    // A shared stream serves other tabs too: it stays open while this one is hidden.
    this.unwatch = watchPage(this, this.share ? null : options.closeWhenHiddenMs);
    if (this.share) this.setState("connecting");
    else this.connect("connect");
  }

  /** The id of the last delivered event: the resume point to persist. */
  get lastEventId() {
    return this.last;
  }

  /** Shared between tabs: whether this tab holds the lock and runs the stream. */
  get leader() {
    return this.share?.leader ?? false;
  }

  /** The newest `latest` value of (topic, key), or undefined. */
  latest(topic, key) {
    return this.latestState.get(topic + "\u0000" + key);
  }

  close() {
    this.finish(null);
  }

  [Symbol.asyncIterator]() {
    this.iterating = true;
    return {
      next: () => {
        if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift(), done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.waiters.push(resolve));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  // ---- plumbing ------------------------------------------------------------------------

  setState(s, info) {
    if (this.state === s) return;
    this.state = s;
    this.share?.relayState(s);
    this.call("onState", s, info);
  }

  call(name, ...args) {
    const f = this.opts[name];
    if (typeof f !== "function") return;
    try {
      f(...args);
    } catch (e) {
      // A throwing callback must not break delivery; surface it asynchronously.
      setTimeout(() => {
        throw e;
      }, 0);
    }
  }

  later(ms, f) {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) f();
    }, Math.max(0, ms));
    this.timers.add(t);
    return t;
  }

  clearTimer(t) {
    if (t) {
      clearTimeout(t);
      this.timers.delete(t);
    }
  }

  finish(error) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.stream?.abort();
    this.stream = null;
    for (const c of this.requests) c.abort();
    this.requests.clear();
    this.pending.clear();
    this.share?.close();
    this.unwatch?.();
    if (error) this.call("onError", error);
    this.setState("closed", error ? { error } : undefined);
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  async headers(reason, extra) {
    const h = { ...extra };
    if (typeof this.opts.getToken === "function") {
      const token = await this.opts.getToken({ reason });
      if (token) h.Authorization = `Bearer ${token}`;
    }
    return h;
  }

  idleMs() {
    return this.opts.idleTimeoutMs ?? this.opts.heartbeatMs * this.opts.idleFactor;
  }

  backoff() {
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffMinMs * 2 ** Math.min(this.failures, 30));
    return Math.random() * cap;
  }

  // ---- the stream ------------------------------------------------------------------------

  scheduleReconnect(reason, delayMs) {
    this.stream?.abort();
    this.stream = null;
    if (this.closed || this.polling) return;
    this.setState("connecting");
    this.reconnectAfter(Math.max(delayMs, this.retryMs), reason);
  }

  reconnectAfter(ms, reason) {
    this.clearTimer(this.reconnectTimer);
    this.reconnectTimer = this.later(ms, () => {
      this.reconnectTimer = null;
      this.connect(reason);
    });
  }

  /** `online` or the page visible again (page.js): connect now if a reconnect is waiting, or
   * (when `visible`) if the stream was closed while hidden. Not faster than `retry:` otherwise. */
  wake(reason, visible) {
    if (this.closed || this.polling || this.stream || (this.share && !this.share.leader)) return;
    if (this.asleep ? !visible : this.reconnectTimer === null) return;
    this.clearTimer(this.reconnectTimer);
    this.reconnectTimer = null;
    this.asleep = false;
    this.connect(reason);
  }

  /** The page stayed hidden for `closeWhenHiddenMs` (page.js): close the stream until visible. */
  sleep() {
    if (this.closed || this.polling || this.share) return;
    this.stream?.abort();
    this.stream = null;
    this.clearTimer(this.reconnectTimer);
    this.reconnectTimer = null;
    this.asleep = true;
    this.setState("connecting");
  }

  fail(reason) {
    const delay = this.backoff();
    this.failures++;
    this.scheduleReconnect(reason, delay);
  }

  async connect(reason) {
    if (this.closed) return;
    this.setState("connecting");
    const ctrl = new AbortController();
    this.stream = ctrl;
    this.ending = null;
    const q = this.topics.map((t) => "topic=" + encodeURIComponent(t)).join("&");
    let res;
    try {
      const extra = { Accept: "text/event-stream" };
      if (this.last !== null) extra["Last-Event-ID"] = this.last;
      const headers = await this.headers(reason, extra);
      if (ctrl.signal.aborted) return;
      // The watchdog also covers a node that accepts but never answers.
      const idle = this.later(this.idleMs(), () => ctrl.abort());
      try {
        res = await this.fetch(`${this.base}/events?${q}`, { headers, signal: ctrl.signal, cache: "no-store" });
      } finally {
        this.clearTimer(idle);
      }
    } catch (e) {
      if (this.stream === ctrl) this.fail("reconnect");
      return;
    }
    if (this.stream !== ctrl) return;
    if (res.status === 401) {
      res.body?.cancel().catch(() => {});
      // A fresh token at once the first time; then back off like any failure.
      if (this.failures === 0) {
        this.failures++;
        this.reconnectAfter(this.retryMs, "unauthorized");
      } else this.fail("unauthorized");
      return;
    }
    if (res.status === 403) {
      const text = await res.text().catch(() => "");
      this.finish(new SseEdgeError(`403 Forbidden: ${text.trim()}`, 403));
      return;
    }
    if (res.status !== 200 || !res.body) {
      res.body?.cancel().catch(() => {});
      this.fail("reconnect");
      return;
    }
    this.read(res.body, ctrl);
  }

  async read(body, ctrl) {
    const reader = body.getReader();
    const parser = new EventStreamParser(
      (f) => this.onFrame(f, ctrl),
      (ms) => {
        this.retryMs = ms;
      },
    );
    let watchdog = null;
    const idleMs = this.idleMs();
    const arm = () => {
      this.clearTimer(watchdog);
      watchdog = this.later(idleMs, () => {
        if (this.stream === ctrl) this.fail("reconnect");
      });
    };
    arm();
    let gotBytes = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stream !== ctrl) break;
        arm();
        if (!gotBytes) {
          gotBytes = true;
          this.failures = 0;
          this.setState("live");
        }
        parser.push(value);
        if (this.stream !== ctrl) break;
      }
    } catch {
      // cut: handled below
    } finally {
      this.clearTimer(watchdog);
      parser.end();
      reader.cancel().catch(() => {});
    }
    if (this.stream === ctrl) {
      const ending = this.ending;
      this.ending = null;
      // Announced by the node, or else a cut.
      if (ending) this.scheduleReconnect(ending, 0);
      else this.fail("reconnect");
    }
  }

  onFrame(f, ctrl) {
    if (this.stream !== ctrl || this.closed) return;
    if (f.id === null && NOTICES.has(f.event)) {
      this.onNotice(f);
      return;
    }
    if (f.id === null || !isId(f.id)) return;
    this.accept({
      id: f.id,
      topic: f.topic,
      event: f.event,
      data: f.data,
      class: f.class,
      key: f.key ?? undefined,
    });
  }

  onNotice(f) {
    let body = {};
    try {
      // Ids stay exact: quoted before parsing (the node writes them as JSON numbers).
      body = JSON.parse(f.data.replace(/"(from|to)":(\d+)/g, '"$1":"$2"'));
    } catch {
      // a notice without JSON: no fields
    }
    switch (f.event) {
      case "gap":
        if (isId(String(body.from)) && isId(String(body.to))) this.gap(String(body.from), String(body.to));
        break;
      // The node closes the stream after these (after sending what is queued): read to the
      // end, then reconnect after its `retry:`, without counting a failure.
      case "server-shutdown":
        this.ending = "reconnect";
        break;
      case "token-expired":
        this.ending = "expired";
        break;
      case "system.overloaded":
        this.startPolling();
        break;
      case "system.recovered":
        this.overloadBackoff = this.opts.overloadBackoffMinMs;
        break;
      default:
        break;
    }
  }

  // ---- delivery ------------------------------------------------------------------------

  noteLatest(e) {
    if (e.class === "latest" && e.key !== undefined) {
      const k = e.topic + "\u0000" + e.key;
      const cur = this.latestState.get(k);
      if (!cur || big(cur.id) < big(e.id)) this.latestState.set(k, e);
    }
  }

  accept(e) {
    this.noteLatest(e);
    if (this.fills > 0 || this.polling) {
      if (this.last === null || big(e.id) > big(this.last)) this.pending.set(e.id, e);
      return;
    }
    this.deliver(e);
  }

  deliver(e) {
    if (this.last !== null && big(e.id) <= big(this.last)) return;
    const prev = this.last;
    this.last = e.id;
    this.share?.relayEvent(e, prev);
    this.call("onEvent", e);
    if (this.iterating) {
      const w = this.waiters.shift();
      if (w) w({ value: e, done: false });
      else this.queue.push(e);
    }
  }

  /** Delivers the held-back events with ids up to `upTo` (all when null), in id order. */
  flush(upTo) {
    const ids = [...this.pending.keys()].map(big).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const id of ids) {
      if (upTo !== null && id > upTo) break;
      const s = id.toString();
      const e = this.pending.get(s);
      this.pending.delete(s);
      if (!this.closed) this.deliver(e);
    }
  }

  lost(topic, from, to) {
    this.share?.relayLost({ topic, from, to });
    this.call("onLost", { topic, from, to });
  }

  // ---- gaps ------------------------------------------------------------------------------

  gap(from, to) {
    if (this.last !== null && big(to) <= big(this.last)) return;
    const after = (big(from) - 1n).toString();
    for (const topic of this.topics) {
      this.fills++;
      this.fill(topic, after, big(from), big(to), 0);
    }
  }
}

Object.assign(Subscription.prototype, polling);
