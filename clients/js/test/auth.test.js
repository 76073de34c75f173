// Auth: a token that expires mid-stream is replaced through getToken and nothing is missed;
// a 401 asks for a fresh token; a 403 is final: state `closed` with the error.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { subscribe } from "../src/index.js";
import { entry, publishBatch, sleep, startServer, token, waitFor } from "./helpers.js";

const SECRET = "client-test-secret";
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

async function server() {
  const s = await startServer([
    "--retry-ms", "50",
    "--heartbeat-ms", "200",
    "--subscribe-key", SECRET,
    "--max-streams-per-user", "0",
    "--shutdown-retry-spread-ms", "300",
  ]);
  cleanups.push(() => s.stop());
  return s;
}

test("expiring tokens are refreshed mid-stream, a 401 gets a fresh token, nothing is missed", { timeout: 60_000 }, async () => {
  const s = await server();
  const reasons = [];
  const log = [];
  const lost = [];
  const sub = subscribe(s.url, {
    topics: ["t"],
    backoffMinMs: 20,
    backoffMaxMs: 200,
    getToken: async ({ reason }) => {
      reasons.push(reason);
      // The first token is already expired (401); later ones live 2 s.
      return token(SECRET, ["t"], reasons.length === 1 ? -10 : 2);
    },
    onEvent: (e) => log.push(e),
    onLost: (r) => lost.push(r),
  });
  cleanups.push(() => sub.close());
  await waitFor("the stream", () => sub.state === "live");
  assert.deepEqual(reasons.slice(0, 2), ["connect", "unauthorized"]);

  const published = [];
  const deadline = Date.now() + 4500; // longer than two token lifetimes
  let n = 0;
  while (Date.now() < deadline) {
    published.push(...(await publishBatch(s.url, [{ topic: "t", data: `event ${n++}` }])));
    await sleep(25);
  }
  const lastId = published.at(-1).id;
  await waitFor("the last event", () => sub.lastEventId === lastId, 20_000);
  await sleep(200);

  assert.ok(reasons.filter((r) => r === "expired").length >= 1, `reasons: ${reasons.join(" ")}`);
  assert.deepEqual(lost, []);
  assert.deepEqual(log.map(entry), published.map(entry), "exactly the published sequence");
});

test("a 403 is final: state closed with the error, no reconnect", { timeout: 20_000 }, async () => {
  const s = await server();
  const states = [];
  const errors = [];
  let asked = 0;
  const sub = subscribe(s.url, {
    topics: ["secret"],
    backoffMinMs: 20,
    getToken: () => {
      asked++;
      return token(SECRET, ["public"], 60);
    },
    onState: (st, info) => states.push([st, info?.error?.status]),
    onError: (e) => errors.push(e),
  });
  cleanups.push(() => sub.close());
  await waitFor("closed", () => sub.state === "closed", 10_000);
  await sleep(300);
  assert.deepEqual(states, [["connecting", undefined], ["closed", 403]]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].status, 403);
  assert.equal(sub.error, errors[0]);
  assert.equal(asked, 1, "no retry after a 403");
  // The iterator ends.
  const it = sub[Symbol.asyncIterator]();
  assert.deepEqual(await it.next(), { value: undefined, done: true });
});
