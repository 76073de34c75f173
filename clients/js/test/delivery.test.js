// Exactly-once, in-order delivery through cuts, frames sent twice, a held (silent) connection,
// a frame cut in the middle, and a throttled reader that makes the node send `gap`; then a real, forced loss that
// `onLost` must name exactly.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { subscribe } from "../src/index.js";
import { FAULT_SERVER_ARGS, entry, publishBatch, sleep, startProxy, startServer, waitFor } from "./helpers.js";

const PAD = "x".repeat(1000);
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

function client(url, topics, extra = {}) {
  const log = [];
  const lost = [];
  const states = [];
  const sub = subscribe(url, {
    topics,
    backoffMinMs: 20,
    backoffMaxMs: 200,
    idleTimeoutMs: 1000,
    onEvent: (e) => log.push(e),
    onLost: (r) => lost.push(r),
    onState: (s) => states.push(s),
    ...extra,
  });
  cleanups.push(() => sub.close());
  return { sub, log, lost, states };
}

test("2,000 reliable events on two topics arrive exactly once, in order, through four faults", { timeout: 60_000 }, async () => {
  const server = await startServer(FAULT_SERVER_ARGS);
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server);
  cleanups.push(() => proxy.close());

  const c = client(proxy.url, ["a", "b"], { pollLimit: 7 }); // gap fills page (X-Next-After)
  await waitFor("the first stream", () => c.states.includes("live"));

  const published = [];
  let throttled = null;
  for (let batch = 0; batch < 100; batch++) {
    const events = [];
    for (let i = 0; i < 20; i++) {
      const n = batch * 20 + i;
      events.push({ topic: n % 3 === 0 ? "b" : "a", data: `${n} ${PAD}` });
    }
    published.push(...(await publishBatch(server.url, events)));
    if (batch === 10) proxy.cutAll();
    if (batch === 18) proxy.duplicateNext();
    if (batch === 25) proxy.holdStreams();
    if (batch === 45) {
      const streams = proxy.stats.streams;
      await waitFor("a reconnect after the silent connection", () => proxy.stats.streams > streams, 10_000);
    }
    if (batch === 55) proxy.cutNextMidFrame();
    if (batch === 70) throttled = proxy.throttle(1500);
    await sleep(batch >= 70 ? 2 : 15);
  }
  await throttled;
  assert.equal(published.length, 2000);
  await waitFor("every event", () => c.log.length >= 2000, 30_000);
  await sleep(300); // anything extra (a duplicate) would arrive now

  assert.ok(proxy.stats.cuts >= 1);
  assert.equal(proxy.stats.midFrameCuts, 1, "a frame was cut in the middle");
  assert.equal(proxy.stats.duplicated, 1, "frames were sent twice");
  assert.ok(proxy.stats.gapsSeen >= 1, "the throttled reader made the node send gap");
  assert.ok(proxy.stats.streams >= 5, `reconnects: ${proxy.stats.streams} streams`);
  assert.deepEqual(c.lost, [], "nothing is lost while history holds everything");
  assert.deepEqual(c.log.map(entry), published.map(entry), "exactly the published sequence");
  assert.equal(c.sub.lastEventId, published.at(-1).id);
  for (const e of c.log) assert.equal(e.class, "reliable");
});

test("a real loss (tiny history) is named exactly by onLost, the rest arrives in order", { timeout: 60_000 }, async () => {
  const server = await startServer([
    "--retry-ms", "50",
    "--heartbeat-ms", "200",
    "--outbox-max-events", "8",
    "--outbox-max-bytes", "16384",
    "--send-buffer-bytes", "4096",
    "--history-max-events", "10",
  ]);
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server);
  cleanups.push(() => proxy.close());

  const c = client(proxy.url, ["solo"]);
  await waitFor("the stream", () => c.states.includes("live"));
  const published = [];
  const batch = (from) =>
    Array.from({ length: 20 }, (_, i) => ({ topic: "solo", data: `${from + i} ${PAD}` }));
  published.push(...(await publishBatch(server.url, batch(0))));
  await waitFor("the first 20", () => c.log.length === 20);
  const throttled = proxy.throttle(1500);
  for (let k = 1; k <= 25; k++) published.push(...(await publishBatch(server.url, batch(k * 20))));
  await throttled;
  published.push(...(await publishBatch(server.url, batch(1000))));
  const lastId = published.at(-1).id;
  await waitFor("the last event", () => c.sub.lastEventId === lastId, 20_000);
  await sleep(300);

  assert.ok(proxy.stats.gapsSeen >= 1, "the node reported a gap");
  assert.ok(c.lost.length >= 1, "onLost was called");
  const inLost = (e) =>
    c.lost.some((r) => r.topic === e.topic && BigInt(r.from) <= BigInt(e.id) && BigInt(e.id) <= BigInt(r.to));
  const got = new Set(c.log.map((e) => e.id));
  const missing = published.filter((e) => !got.has(e.id));
  assert.ok(missing.length > 0, "events were really lost");
  assert.deepEqual(
    missing.map(entry),
    published.filter(inLost).map(entry),
    "onLost names exactly the events that never arrived",
  );
  assert.deepEqual(c.log.map(entry), published.filter((e) => !inLost(e)).map(entry), "the rest, in order");
});
