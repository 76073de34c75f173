// The library in Chromium (Debian's, driven by playwright-core): a page on its own origin
// subscribes across origins (the node's --cors-origin) through the fault proxy, and rides a
// cut and a gap with exactly the published sequence; going offline and back online
// (context.setOffline) recovers with nothing lost. Skipped, with the reason, when Chromium
// or playwright-core is missing.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { browserSkipReason, launchChromium, openPage, startPageServer } from "./browser-helpers.js";
import { FAULT_SERVER_ARGS, entry, publishBatch, sleep, startProxy, startServer, waitFor } from "./helpers.js";

const skip = (await browserSkipReason()) ?? false;
if (skip) console.log(`# browser tests skipped: ${skip}`);

const PAD = "x".repeat(1000);
const cleanups = [];
let env = null;

before(async () => {
  if (skip) return;
  const pages = await startPageServer();
  cleanups.push(() => pages.close());
  const server = await startServer([...FAULT_SERVER_ARGS, "--cors-origin", pages.origin]);
  cleanups.push(() => server.stop());
  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  env = { pages, server, browser };
});
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

/** A proxy in front of the node and a fresh browser context with the page subscribed through it. */
async function subscribed(topics) {
  const proxy = await startProxy(env.server);
  cleanups.push(() => proxy.close());
  const context = await env.browser.newContext();
  cleanups.push(() => context.close());
  const page = await openPage(context, env.pages.origin);
  const options = { backoffMinMs: 20, backoffMaxMs: 200, idleTimeoutMs: 1000 };
  await page.evaluate(([url, t, o]) => window.start(url, t, o), [proxy.url, topics, options]);
  await page.waitForFunction(() => window.states.includes("live"));
  const read = () => page.evaluate(() => ({ log: window.log, lost: window.lost, states: window.states, errors: window.errors, last: window.sub.lastEventId }));
  return { proxy, context, page, read };
}

async function publish(topics, n, from) {
  const events = Array.from({ length: n }, (_, i) => ({ topic: topics[(from + i) % topics.length], data: `${from + i} ${PAD}` }));
  return publishBatch(env.server.url, events);
}

async function untilAll(read, published) {
  const lastId = published.at(-1).id;
  let seen = null;
  const deadline = Date.now() + 30_000;
  for (;;) {
    seen = await read();
    if (seen.last === lastId) break;
    if (Date.now() > deadline) throw new Error(`the page got ${seen.log.length} of ${published.length} (last ${seen.last}), states ${seen.states}`);
    await sleep(50);
  }
  await sleep(300); // anything extra (a duplicate) would arrive now
  return read();
}

test("a page rides a cut and a gap with exactly the published sequence", { skip, timeout: 60_000 }, async () => {
  const topics = ["a", "b"];
  const { proxy, read } = await subscribed(topics);
  const published = [];
  let throttled = null;
  let streams = 0;
  for (let batch = 0; batch < 30; batch++) {
    published.push(...(await publish(topics, 20, batch * 20)));
    if (batch === 5) {
      streams = proxy.stats.streams;
      proxy.cutAll();
    }
    if (batch === 12) {
      await waitFor("the page to reconnect after the cut", () => proxy.stats.streams > streams, 10_000);
    }
    if (batch === 15) throttled = proxy.throttle(1500);
    await sleep(batch >= 15 ? 2 : 15);
  }
  await throttled;
  const seen = await untilAll(read, published);
  assert.ok(proxy.stats.cuts >= 1);
  assert.ok(proxy.stats.gapsSeen >= 1, "the throttled reader made the node send gap");
  assert.ok(proxy.stats.streams >= 2, `reconnects: ${proxy.stats.streams} streams`);
  assert.deepEqual(seen.lost, [], "nothing is lost while history holds everything");
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.log.map(entry), published.map(entry), "exactly the published sequence");
});

test("context.setOffline(true) then (false): the page recovers and misses nothing", { skip, timeout: 60_000 }, async () => {
  const topics = ["off"];
  const { proxy, context, read } = await subscribed(topics);
  const published = [...(await publish(topics, 10, 0))];
  // Offline emulation leaves an open stream alone: cut it, so the page must reconnect offline.
  await context.setOffline(true);
  const streams = proxy.stats.streams;
  proxy.cutAll();
  published.push(...(await publish(topics, 30, 10)));
  await sleep(800); // several backoff rounds (20..200 ms): every one fails in the browser
  const offline = await read();
  assert.equal(proxy.stats.streams, streams, "offline, no stream reached the node");
  assert.ok(offline.log.length < published.length, "offline, the page did not get everything");
  assert.notEqual(offline.states.at(-1), "live");
  await context.setOffline(false);
  published.push(...(await publish(topics, 10, 40)));
  const seen = await untilAll(read, published);
  assert.ok(proxy.stats.streams > streams, "back online, the page reconnected");
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.log.map(entry), published.map(entry), "exactly the published sequence");
});
