// What index.js and polling.js share: the error type and id helpers.

/** An HTTP answer the client cannot go on with. */
export class SseEdgeError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "SseEdgeError";
    this.status = status;
  }
}

/** An id (a decimal string) as a BigInt, for exact comparison above 2^53. */
export const big = (s) => BigInt(s);

/** Whether `s` is an id: a decimal string. */
export const isId = (s) => typeof s === "string" && /^[0-9]+$/.test(s);

// Polling JSON has numeric ids; keep them exact (no 2^53 rounding) by quoting them before
// JSON.parse. Inside a JSON string every `"` is escaped, so `{"id":` / `,"id":` can only be
// the key of an object.
export function parseEvents(text) {
  return JSON.parse(text.replace(/([{,])"id":(\d+)/g, '$1"id":"$2"'));
}
