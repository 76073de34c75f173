// The async iterator yields the same events as onEvent, `latest` is state per (topic, key)
// with the newest id winning, and close() leaves nothing behind: no timer, no request, no
// callback, no reconnect.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { subscribe } from "../src/index.js";
import { entry, publishBatch, sleep, startProxy, startServer, waitFor } from "./helpers.js";

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

test("iterator, latest state, and close() during a pending reconnect", { timeout: 30_000 }, async () => {
  const server = await startServer(["--retry-ms", "200", "--latest-min-interval-ms", "0"]);
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server);
  cleanups.push(() => proxy.close());
  const log = [];
  const states = [];
  const sub = subscribe(proxy.url, {
    topics: ["a", "p"],
    onEvent: (e) => log.push(e),
    onState: (s) => states.push(s),
  });
  cleanups.push(() => sub.close());
  const iterated = [];
  const iterating = (async () => {
    for await (const e of sub) iterated.push(e);
  })();
  await waitFor("the stream", () => sub.state === "live");

  const published = await publishBatch(server.url, [
    { topic: "a", data: "one" },
    { topic: "a", data: "two" },
  ]);
  const res = await fetch(`${server.url}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/x-ndjson" },
    body: ['{"topic":"p","class":"latest","key":"job","data":"10%"}', '{"topic":"p","class":"latest","key":"job","data":"20%"}', '{"topic":"p","class":"droppable","data":"tick"}'].join("\n"),
  });
  assert.equal(res.status, 202, await res.text());
  await waitFor("the droppable event, published last", () => log.some((e) => e.data === "tick"));
  assert.deepEqual(log.slice(0, 2).map(entry), published.map(entry));
  // The node may conflate the unsent 10% into 20% (latest: newest wins).
  const rest = log.slice(2).map((e) => [e.topic, e.class, e.key, e.data]);
  assert.deepEqual(rest.at(-2), ["p", "latest", "job", "20%"]);
  assert.deepEqual(rest.at(-1), ["p", "droppable", undefined, "tick"]);
  assert.ok(rest.length === 2 || (rest.length === 3 && rest[0][3] === "10%"), JSON.stringify(rest));
  assert.equal(sub.latest("p", "job").data, "20%");
  assert.equal(sub.latest("p", "other"), undefined);
  await waitFor("the iterator", () => iterated.length === log.length);
  assert.deepEqual(iterated, log);

  // Cut: the client waits the node's retry (200 ms) before reconnecting; close() meanwhile.
  proxy.cutAll();
  await waitFor("reconnect pending", () => sub.state === "connecting");
  sub.close();
  const after = states.length;
  await sleep(600);
  assert.equal(proxy.stats.streams, 1, "no reconnect after close()");
  assert.equal(sub.state, "closed");
  assert.equal(states.length, after, "no callback after close()");
  assert.equal(sub.timers.size, 0, "no timer left");
  assert.equal(sub.requests.size, 0, "no request left");
  await iterating; // the iterator ended
});
