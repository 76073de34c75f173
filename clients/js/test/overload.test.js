// Overload: on `system.overloaded` the client switches to polling `/topics/{t}/events`, goes
// back to the stream after a backoff, and misses nothing on the way.

import assert from "node:assert/strict";
import net from "node:net";
import { after, test } from "node:test";

import { subscribe } from "../src/index.js";
import { entry, publishBatch, sleep, startServer, waitFor } from "./helpers.js";

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

/** A subscriber that never reads: its outbox fills and drives the node into overload. */
function stalledReader(server, topic) {
  const s = net.connect(server.port, server.host, () => {
    s.write(`GET /events?topic=${topic} HTTP/1.1\r\nHost: x\r\n\r\n`);
    s.pause();
  });
  s.on("error", () => {});
  cleanups.push(() => s.destroy());
  return s;
}

test("overload switches to polling and back to the stream without losing an event", { timeout: 60_000 }, async () => {
  const server = await startServer([
    "--retry-ms", "50",
    "--heartbeat-ms", "200",
    "--send-buffer-bytes", "4096",
    "--overload-queued-bytes", "65536",
    "--status-interval-ms", "100",
    "--history-max-events", "5000",
    "--history-max-bytes", "16777216",
  ]);
  cleanups.push(() => server.stop());

  const log = [];
  const lost = [];
  const states = [];
  let whilePolling = 0;
  const sub = subscribe(server.url, {
    topics: ["x", "y"],
    backoffMinMs: 20,
    backoffMaxMs: 200,
    pollIntervalMs: 100,
    pollLimit: 5, // several pages per round: X-Next-After is followed
    overloadBackoffMinMs: 1000,
    overloadBackoffMaxMs: 2000,
    onEvent: (e) => {
      log.push(e);
      if (sub.state === "polling") whilePolling++;
    },
    onLost: (r) => lost.push(r),
    onState: (s) => states.push(s),
  });
  cleanups.push(() => sub.close());
  await waitFor("the stream", () => states.includes("live"));

  const pad = "p".repeat(2000);
  const published = [];
  let n = 0;
  const publish = async (count) => {
    const events = [];
    for (let i = 0; i < count; i++, n++) events.push({ topic: n % 2 ? "x" : "y", data: `${n} ${pad}` });
    published.push(...(await publishBatch(server.url, events)));
  };
  await publish(10);
  const stalled = stalledReader(server, "x");
  // Fill the stalled reader's outbox past the threshold while the client follows.
  for (let k = 0; k < 60 && !states.includes("polling"); k++) {
    await publish(20);
    await sleep(20);
  }
  await waitFor("polling", () => states.includes("polling"), 10_000);
  for (let k = 0; k < 10; k++) {
    await publish(10);
    await sleep(50);
  }
  stalled.destroy();
  await waitFor("overload mode to end", () => server.log.some((l) => l.includes("overload mode OFF")), 20_000);
  await waitFor("back on the stream", () => sub.state === "live", 20_000);
  // On the stream again: the client receives what is published now.
  await publish(10);
  const lastId = published.at(-1).id;
  await waitFor("the last event", () => sub.lastEventId === lastId, 20_000);
  await sleep(200);

  assert.ok(server.log.some((l) => l.includes("overload mode ON")), "the node really was overloaded");
  assert.ok(states.indexOf("polling") < states.lastIndexOf("live"), `states: ${states.join(" ")}`);
  assert.equal(sub.state, "live");
  assert.ok(whilePolling > 0, "events were delivered from polling");
  assert.deepEqual(lost, []);
  assert.deepEqual(log.map(entry), published.map(entry), "exactly the published sequence");
});
