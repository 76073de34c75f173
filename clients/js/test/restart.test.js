// A node restart: `server-shutdown` carries the node's `retry:`; the client waits that long
// (not its own, much shorter, backoff), resumes on the new node, and misses nothing.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { subscribe } from "../src/index.js";
import { entry, publishBatch, startProxy, startServer, waitFor } from "./helpers.js";

const RETRY_MS = 800;
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

test("server-shutdown: the client honours its retry, resumes on the new node, loses nothing", { timeout: 30_000 }, async () => {
  const args = ["--retry-ms", String(RETRY_MS), "--shutdown-retry-spread-ms", "0", "--drain-timeout-ms", "500"];
  const first = await startServer(args);
  cleanups.push(() => first.stop());
  const proxy = await startProxy(first);
  cleanups.push(() => proxy.close());
  const log = [];
  const lost = [];
  const sub = subscribe(proxy.url, {
    topics: ["t"],
    backoffMinMs: 10,
    backoffMaxMs: 20,
    onEvent: (e) => log.push(e),
    onLost: (r) => lost.push(r),
  });
  cleanups.push(() => sub.close());
  await waitFor("the stream", () => sub.state === "live");
  const published = await publishBatch(first.url, [1, 2, 3].map((n) => ({ topic: "t", data: `before ${n}` })));
  await waitFor("the first events", () => log.length === 3);

  const second = await startServer(args);
  cleanups.push(() => second.stop());
  proxy.setTarget(second);
  first.child.kill("SIGTERM"); // drain: every stream gets server-shutdown
  await waitFor("a stream on the new node", () => proxy.stats.streams === 2, 10_000);
  published.push(...(await publishBatch(second.url, [1, 2, 3].map((n) => ({ topic: "t", data: `after ${n}` })))));
  await waitFor("the events of the new node", () => log.length === 6, 10_000);

  assert.equal(proxy.stats.shutdownSeenAt.length, 1, "the node sent server-shutdown");
  const waited = proxy.stats.streamOpenedAt[1] - proxy.stats.shutdownSeenAt[0];
  assert.ok(waited >= RETRY_MS, `reconnected ${waited.toFixed(0)} ms after the notice, before its retry`);
  assert.equal(proxy.stats.streams, 2, "one reconnect, no failed attempts");
  // A restarted node without a bus holds no history from before its start: it cannot vouch for
  // ids between the resume point and its own first id, and says so (gap -> onLost). Nothing
  // that was published falls inside that range.
  for (const r of lost) {
    assert.equal(r.topic, "t");
    assert.ok(BigInt(r.from) > BigInt(published[2].id), `${r.from} after the last delivered id`);
    assert.ok(BigInt(r.to) < BigInt(published[3].id), `${r.to} before the new node's first event`);
  }
  assert.deepEqual(log.map(entry), published.map(entry));
});
