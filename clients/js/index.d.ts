// Type declarations for sse-edge-client 0.1.0 (hand-written; keep in step with src/index.js).

/** One event, as delivered to `onEvent` and the async iterator. */
export interface SseEdgeEvent {
  /** The node's id, a decimal string (compare as BigInt; never a Number). */
  id: string;
  /** The topic it was published on (the frame's `topic:` field). */
  topic: string;
  /** The event name (`message` when the publisher gave none). */
  event: string;
  /** The data, lines joined with LF. */
  data: string;
  /** Delivery class. */
  class: "reliable" | "latest" | "droppable";
  /** Conflation key of a `latest` event. */
  key?: string;
}

/** Reliable events on `topic` with ids `from..=to` (inclusive, decimal strings) that the node
 * no longer holds: they will never be delivered. Ids interleave across topics, so the range
 * may also span ids of other topics. */
export interface LostRange {
  topic: string;
  from: string;
  to: string;
}

export type State = "connecting" | "live" | "polling" | "closed";

/** Why a token is asked for: the first connect, a reconnect, a 401 answer, a
 * `token-expired` notice, or a polling / gap-fill request. */
export type TokenReason = "connect" | "reconnect" | "unauthorized" | "expired" | "poll";

/** An HTTP answer the client cannot go on with (a 403 is final). */
export declare class SseEdgeError extends Error {
  readonly status: number;
}

export interface SubscribeOptions {
  /** Topics to subscribe to (at least one). */
  topics: string[];
  /** Resume after this id (decimal string), e.g. a persisted `sub.lastEventId`. */
  lastEventId?: string | null;
  /** Called before each connect and each poll; the token goes out as
   * `Authorization: Bearer <token>`. Return null/undefined for no header. */
  getToken?: (ctx: { reason: TokenReason }) => string | null | undefined | Promise<string | null | undefined>;
  /** Every event, exactly once, in id order. */
  onEvent?: (e: SseEdgeEvent) => void;
  /** Reliable events that are gone for good. */
  onLost?: (range: LostRange) => void;
  /** State changes. On a final error (403) the state becomes `closed` with `{ error }`. */
  onState?: (s: State, info?: { error: SseEdgeError }) => void;
  /** A final error (403): the subscription is closed. */
  onError?: (error: SseEdgeError) => void;
  /** Lower bound of the reconnect backoff (full jitter), ms. Default 500. */
  backoffMinMs?: number;
  /** Upper bound of the reconnect backoff, ms. Default 30000. */
  backoffMaxMs?: number;
  /** The node's heartbeat interval, ms. Default 25000. */
  heartbeatMs?: number;
  /** The idle watchdog reconnects after `idleFactor * heartbeatMs` without a byte. Default 3. */
  idleFactor?: number;
  /** Overrides `idleFactor * heartbeatMs`. */
  idleTimeoutMs?: number;
  /** Poll interval while the node is overloaded, ms (jittered). Default 2000. */
  pollIntervalMs?: number;
  /** First time spent polling after `system.overloaded` before trying the stream again, ms;
   * doubles on each overload up to `overloadBackoffMaxMs`. Defaults 5000 / 60000. */
  overloadBackoffMinMs?: number;
  overloadBackoffMaxMs?: number;
  /** `limit` of each polling request (1..=1000). Default 1000. */
  pollLimit?: number;
  /** Browsers: share one stream between the tabs of this origin that subscribe to the same
   * base URL and topics. One tab holds a Web Lock and runs the stream, relaying what it
   * delivers over a BroadcastChannel; when it goes, another takes over from its own last id
   * (no gap, no duplicate). The other tabs' `onState` follows the leader's state. Ignored
   * (each subscription has its own stream) where Web Locks or BroadcastChannel are missing,
   * as in Node. Default false. */
  shared?: boolean;
  /** Browsers: close the stream once the page has been hidden this long, ms, and reopen it
   * (from `lastEventId`) when the page is visible again; the state meanwhile is
   * `connecting`. Default: stay connected while hidden. Ignored with `shared: true` (the
   * leader's stream serves other tabs). In any case a waiting reconnect (backoff or the
   * node's `retry:`) is cut short by `online` and by the page becoming visible. */
  closeWhenHiddenMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

export interface Subscription extends AsyncIterable<SseEdgeEvent> {
  /** The id of the last delivered event: the resume point to persist (null before any). */
  readonly lastEventId: string | null;
  /** The current state. */
  readonly state: State;
  /** The final error, once closed by one. */
  readonly error: SseEdgeError | null;
  /** With `shared: true`: whether this tab holds the lock and runs the stream. */
  readonly leader: boolean;
  /** The newest `latest` event of (topic, key). */
  latest(topic: string, key: string): SseEdgeEvent | undefined;
  /** Aborts the stream and every request, clears every timer; no callback fires after it. */
  close(): void;
}

export declare function subscribe(baseUrl: string, options: SubscribeOptions): Subscription;
