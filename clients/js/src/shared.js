// Tab sharing (`shared: true`, browsers): one stream per (base URL, topics) for all tabs of an
// origin. The tab holding a Web Lock leads: it runs the stream and relays what it delivers
// over a BroadcastChannel; the other tabs follow, delivering from the channel. When the
// leader goes (tab closed, `close()`, a final error), the browser hands the lock to one
// follower, which resumes the stream from its own last delivered id.
//
// Invariants:
// 1. At most one tab per name holds the lock, so at most one stream is open (the lock is
//    released by the browser when the leader's document goes away).
// 2. Every relayed event carries `prev`, the id the leader delivered before it. A follower
//    whose last id is below `prev` has missed relayed events (it joined with an older
//    `lastEventId`, or a leader changed): it fills `(last, prev]` from the polling endpoints
//    as for a `gap`, holding newer relayed events back until the fill is merged.
// 3. A new leader resumes after its own last delivered id; followers drop (by id) what they
//    already had, so a handover neither loses nor duplicates an event.
// 4. A leader ignores relayed events: only its stream feeds it (a late message from the old
//    leader could otherwise jump over a fill in progress).
// 5. `close()` aborts the lock request or releases the lock, and closes the channel.

const big = (s) => BigInt(s);

/** True when this runtime can share a stream between tabs. */
export function canShare() {
  return typeof BroadcastChannel === "function" && typeof globalThis.navigator?.locks?.request === "function";
}

/** The lock and channel name of a subscription: its node and its (sorted) topics. */
export function shareName(base, topics) {
  return `sse-edge-client ${base} ${[...topics].sort().join(",")}`;
}

export class Share {
  /**
   * @param {object} sub the Subscription (its connect/accept/gap/deliver/setState/lost)
   * @param {string} name lock and channel name
   */
  constructor(sub, name) {
    this.sub = sub;
    this.leader = false;
    this.release = null;
    this.asked = null; // the highest id a catch-up fill was started for (invariant 2)
    this.abort = new AbortController();
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (m) => this.onMessage(m.data);
    navigator.locks
      .request(name, { signal: this.abort.signal }, () => {
        if (sub.closed) return undefined;
        return new Promise((resolve) => {
          this.release = resolve;
          this.lead();
        });
      })
      .catch(() => {}); // aborted by close()
    this.post({ type: "hello" });
  }

  post(m) {
    try {
      this.channel.postMessage(m);
    } catch {
      // closed channel: nothing to tell
    }
  }

  lead() {
    this.leader = true;
    this.sub.connect("connect");
  }

  /** Called by the leader's deliver(): `prev` is its last id before `e`. */
  relayEvent(e, prev) {
    if (this.leader) this.post({ type: "event", e, prev });
  }

  relayLost(range) {
    if (this.leader) this.post({ type: "lost", range });
  }

  relayState(s) {
    if (this.leader && s !== "closed") this.post({ type: "state", s, last: this.sub.last });
  }

  onMessage(m) {
    const sub = this.sub;
    if (sub.closed || !m || typeof m !== "object") return;
    if (m.type === "hello") {
      if (this.leader && sub.state) this.post({ type: "state", s: sub.state, last: sub.last });
      return;
    }
    if (this.leader) return; // invariant 4
    switch (m.type) {
      case "state":
        this.catchUp(m.last);
        sub.setState(m.s);
        break;
      case "event":
        this.catchUp(m.prev);
        sub.accept(m.e);
        break;
      case "lost":
        sub.lost(m.range.topic, m.range.from, m.range.to);
        break;
      default:
        break;
    }
  }

  /** Fills `(last, upTo]` when this follower is behind the leader (invariant 2). */
  catchUp(upTo) {
    const sub = this.sub;
    if (typeof upTo !== "string" || sub.last === null) return;
    const to = big(upTo);
    if (to <= big(sub.last) || (this.asked !== null && to <= this.asked)) return;
    this.asked = to;
    sub.gap((big(sub.last) + 1n).toString(), upTo);
  }

  close() {
    this.abort.abort();
    this.release?.();
    this.release = null;
    this.leader = false;
    this.channel.close();
  }
}
