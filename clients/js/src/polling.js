// Gap fills and the polling fallback of a Subscription (index.js), from the node's polling
// endpoint `/topics/{t}/events?after=` (paged by `X-Next-After`; what the node no longer holds
// is `X-Gap-From`/`X-Gap-To`). Methods mixed into Subscription.prototype; they keep its
// invariants 1 and 2 (index.js).

import { SseEdgeError, big, isId, parseEvents } from "./common.js";

export const polling = {
  async fill(topic, after, from, to, attempt) {
    const done = () => {
      this.fills--;
      if (this.fills === 0 && !this.polling) this.flush(null);
    };
    for (;;) {
      if (this.closed) return;
      let page;
      try {
        page = await this.poll(topic, after, attempt > 0 ? "unauthorized" : "poll");
      } catch (e) {
        if (this.closed) return;
        if (e instanceof SseEdgeError && e.status === 403) {
          this.finish(e);
          return;
        }
        const delay = Math.max(this.retryMs, Math.random() * this.opts.backoffMinMs * 2 ** Math.min(attempt, 6));
        this.later(delay, () => this.fill(topic, after, from, to, attempt + 1));
        return;
      }
      attempt = 0;
      if (page.gap) {
        const gf = page.gap[0] > from ? page.gap[0] : from;
        const gt = page.gap[1] < to ? page.gap[1] : to;
        if (gf <= gt) this.lost(topic, gf.toString(), gt.toString());
      }
      let passed = false;
      for (const e of page.events) {
        const id = big(e.id);
        if (id > to) {
          passed = true;
          break;
        }
        if (e.class === "droppable") continue;
        this.noteLatest(e);
        if (this.last === null || id > big(this.last)) {
          if (!this.pending.has(e.id)) this.pending.set(e.id, e);
        }
      }
      // Paging always moves forward (polling invariant 4); never loop on a node that does not.
      if (passed || page.next === null || big(page.next) <= big(after)) {
        done();
        return;
      }
      after = page.next;
      if (big(after) >= to) {
        done();
        return;
      }
    }
  },

  /** One `GET /topics/{t}/events?after=` page: events, the lost range, the next cursor. */
  async poll(topic, after, reason) {
    const ctrl = new AbortController();
    this.requests.add(ctrl);
    try {
      const headers = await this.headers(reason, { Accept: "application/json" });
      const url = `${this.base}/topics/${encodeURIComponent(topic)}/events?after=${after}&limit=${this.opts.pollLimit}`;
      const res = await this.fetch(url, { headers, signal: ctrl.signal, cache: "no-store" });
      const text = await res.text();
      if (res.status === 404) return { events: [], gap: null, next: null };
      if (res.status !== 200) throw new SseEdgeError(`poll ${topic}: ${res.status} ${text.trim()}`, res.status);
      const gf = res.headers.get("x-gap-from");
      const gt = res.headers.get("x-gap-to");
      const next = res.headers.get("x-next-after");
      const events = parseEvents(text).map((e) => ({
        id: String(e.id),
        topic: e.topic ?? topic,
        event: e.event ?? "message",
        data: e.data,
        class: e.class ?? "reliable",
        key: e.key ?? undefined,
      }));
      return {
        events,
        gap: isId(gf) && isId(gt) ? [big(gf), big(gt)] : null,
        next: isId(next) ? next : null,
      };
    } finally {
      this.requests.delete(ctrl);
    }
  },

  // ---- overload: polling -------------------------------------------------------------------

  startPolling() {
    if (this.polling || this.closed) return;
    this.stream?.abort();
    this.stream = null;
    const backoff = this.overloadBackoff;
    this.overloadBackoff = Math.min(this.opts.overloadBackoffMaxMs, backoff * 2);
    this.polling = {
      cursors: new Map(),
      horizon: null,
      until: Date.now() + backoff / 2 + Math.random() * (backoff / 2),
    };
    this.setState("polling");
    this.later(Math.random() * this.opts.pollIntervalMs, () => this.pollRound());
  },

  async cursorFor(topic) {
    const c = this.polling.cursors.get(topic);
    if (c !== undefined) return c;
    if (this.last !== null) return this.last;
    // Never delivered anything: start at the topic's newest retained event.
    const ctrl = new AbortController();
    this.requests.add(ctrl);
    try {
      const headers = await this.headers("poll", { Accept: "application/json" });
      const url = `${this.base}/topics/${encodeURIComponent(topic)}/latest`;
      const res = await this.fetch(url, { headers, signal: ctrl.signal, cache: "no-store" });
      const text = await res.text();
      if (res.status === 403) throw new SseEdgeError(`poll ${topic}: 403 ${text.trim()}`, 403);
      return res.status === 200 ? String(parseEvents(text).id) : "0";
    } finally {
      this.requests.delete(ctrl);
    }
  },

  async pollRound() {
    const p = this.polling;
    if (!p || this.closed) return;
    let seen = null;
    try {
      for (const topic of this.topics) {
        let after = await this.cursorFor(topic);
        for (;;) {
          const asked = after;
          const page = await this.poll(topic, asked, "poll");
          if (this.polling !== p) return;
          if (page.gap) {
            const floor = big(after) + 1n;
            const gf = page.gap[0] > floor ? page.gap[0] : floor;
            if (gf <= page.gap[1]) this.lost(topic, gf.toString(), page.gap[1].toString());
          }
          for (const e of page.events) {
            const id = big(e.id);
            if (seen === null || id > seen) seen = id;
            this.noteLatest(e);
            if (this.last === null || id > big(this.last)) this.pending.set(e.id, e);
            after = e.id;
          }
          if (page.next === null || big(page.next) <= big(asked)) break;
          after = page.next;
        }
        p.cursors.set(topic, after);
      }
    } catch (e) {
      if (this.closed || this.polling !== p) return;
      if (e instanceof SseEdgeError && e.status === 403) {
        this.finish(e);
        return;
      }
    }
    // Deliver only up to what the previous round had seen: by then every loop held it.
    if (p.horizon !== null) this.flush(p.horizon);
    if (seen !== null && (p.horizon === null || seen > p.horizon)) p.horizon = seen;
    if (Date.now() >= p.until) {
      this.stopPolling();
      return;
    }
    const jitter = this.opts.pollIntervalMs * (0.5 + Math.random() / 2);
    this.later(jitter, () => this.pollRound());
  },

  stopPolling() {
    this.polling = null;
    // The stream replays from `lastEventId` what was polled but not yet delivered.
    this.pending.clear();
    this.connect("reconnect");
  },
};
