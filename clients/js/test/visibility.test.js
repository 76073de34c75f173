// Visibility and connectivity in Chromium. The node's `retry:` is 60 s here, so a client
// that waits for its reconnect cannot reconnect within these tests: every reconnect seen is
// one that `online` or the page becoming visible cut short. Headless Chromium keeps every
// page visible (minimizing or covering it changes nothing), so the tests set
// document.visibilityState and fire `visibilitychange` in the page, as a browser would.
// Skipped, with the reason, when Chromium or playwright-core is missing.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { browserSkipReason, launchChromium, openPage, startPageServer } from "./browser-helpers.js";
import { entry, publishBatch, sleep, startProxy, startServer, waitFor } from "./helpers.js";

const skip = (await browserSkipReason()) ?? false;
if (skip) console.log(`# browser tests skipped: ${skip}`);

const RETRY_MS = 60_000;
const cleanups = [];
let env = null;

before(async () => {
  if (skip) return;
  const site = await startPageServer();
  cleanups.push(() => site.close());
  const server = await startServer(["--retry-ms", String(RETRY_MS), "--heartbeat-ms", "200", "--cors-origin", site.origin]);
  cleanups.push(() => server.stop());
  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  env = { site, server, browser };
});
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

async function subscribed(topic, extra = {}) {
  const proxy = await startProxy(env.server);
  cleanups.push(() => proxy.close());
  const context = await env.browser.newContext();
  cleanups.push(() => context.close());
  const page = await openPage(context, env.site.origin);
  const options = { backoffMinMs: 20, backoffMaxMs: 200, idleTimeoutMs: 5000, ...extra };
  await page.evaluate(([url, t, o]) => window.start(url, [t], o), [proxy.url, topic, options]);
  await page.waitForFunction(() => window.states.includes("live"));
  const read = () => page.evaluate(() => ({ log: window.log, lost: window.lost, state: window.sub.state, last: window.sub.lastEventId }));
  const setVisibility = (v) =>
    page.evaluate((state) => {
      Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
      Object.defineProperty(document, "hidden", { value: state === "hidden", configurable: true });
      document.dispatchEvent(new Event("visibilitychange"));
    }, v);
  const published = [];
  const publish = async (n) => {
    const from = published.length;
    published.push(...(await publishBatch(env.server.url, Array.from({ length: n }, (_, i) => ({ topic, data: String(from + i) })))));
  };
  const untilAll = async () => {
    const lastId = published.at(-1).id;
    const deadline = Date.now() + 10_000;
    let seen;
    while ((seen = await read()).last !== lastId) {
      if (Date.now() > deadline) throw new Error(`the page got ${seen.log.length} of ${published.length}, state ${seen.state}`);
      await sleep(50);
    }
    await sleep(200);
    return read();
  };
  return { proxy, context, page, read, setVisibility, published, publish, untilAll };
}

const waitingReconnect = async (c) => {
  await waitFor("the stream to be cut", () => c.proxy.streams().length === 0, 5000);
  const deadline = Date.now() + 5000;
  while ((await c.read()).state !== "connecting") {
    if (Date.now() > deadline) throw new Error("no reconnect pending");
    await sleep(20);
  }
};

test("online: a reconnect waiting for the node's retry: happens at once", { skip, timeout: 30_000 }, async () => {
  const c = await subscribed("on");
  await c.publish(5);
  await c.untilAll();
  await c.context.setOffline(true);
  c.proxy.cutAll();
  await waitingReconnect(c);
  await c.publish(5);
  await sleep(300);
  assert.equal(c.proxy.stats.streams, 1, "offline: still waiting");
  await c.context.setOffline(false);
  await waitFor("a reconnect on online, long before the 60 s retry:", () => c.proxy.stats.streams === 2, 10_000);
  await c.publish(5);
  const seen = await c.untilAll();
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(seen.log.map(entry), c.published.map(entry));
});

test("visible again: a waiting reconnect happens at once", { skip, timeout: 30_000 }, async () => {
  const c = await subscribed("vis");
  await c.publish(5);
  await c.untilAll();
  await c.setVisibility("hidden");
  c.proxy.cutAll();
  await waitingReconnect(c);
  await c.publish(5);
  await sleep(300);
  assert.equal(c.proxy.stats.streams, 1, "hidden: still waiting");
  await c.setVisibility("visible");
  await waitFor("a reconnect on visible, long before the 60 s retry:", () => c.proxy.stats.streams === 2, 10_000);
  const seen = await c.untilAll();
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(seen.log.map(entry), c.published.map(entry));
});

test("hidden: the stream stays open by default; closeWhenHiddenMs closes it until visible", { skip, timeout: 30_000 }, async () => {
  // Default: hidden changes nothing, events keep arriving on the same stream.
  const d = await subscribed("stay");
  await d.setVisibility("hidden");
  await d.publish(5);
  await d.untilAll();
  await sleep(300);
  assert.equal(d.proxy.streams().length, 1, "default: still connected while hidden");
  assert.equal(d.proxy.stats.streams, 1);

  const c = await subscribed("close", { closeWhenHiddenMs: 100 });
  await c.publish(5);
  await c.untilAll();
  await c.setVisibility("hidden");
  await waitFor("the stream closed after 100 ms hidden", () => c.proxy.streams().length === 0, 5000);
  await c.publish(5);
  await c.context.setOffline(true);
  await c.context.setOffline(false); // `online` alone does not reopen a stream closed while hidden
  await sleep(300);
  assert.equal(c.proxy.stats.streams, 1, "no stream while hidden");
  assert.equal((await c.read()).log.length, 5, "nothing delivered while closed");
  await c.setVisibility("visible");
  await waitFor("the stream reopened on visible", () => c.proxy.stats.streams === 2, 10_000);
  await c.publish(5);
  const seen = await c.untilAll();
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(seen.log.map(entry), c.published.map(entry), "what was published while hidden arrives after");
});

test("close() removes the online and visibilitychange listeners and every timer", { skip, timeout: 30_000 }, async () => {
  const context = await env.browser.newContext();
  cleanups.push(() => context.close());
  const page = await openPage(context, env.site.origin);
  const counts = await page.evaluate(async (url) => {
    const live = new Map(); // listener -> type, for the two events the library watches
    for (const target of [window, document]) {
      const add = target.addEventListener.bind(target);
      const remove = target.removeEventListener.bind(target);
      target.addEventListener = (type, f, o) => {
        if (type === "online" || type === "visibilitychange") live.set(f, type);
        return add(type, f, o);
      };
      target.removeEventListener = (type, f, o) => {
        live.delete(f);
        return remove(type, f, o);
      };
    }
    window.start(url, ["x"], { closeWhenHiddenMs: 60_000 });
    const before = [...live.values()].sort();
    Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
    document.dispatchEvent(new Event("visibilitychange")); // arms the hidden timer
    window.sub.close();
    return { before, after: live.size, timers: window.sub.timers.size, state: window.sub.state };
  }, env.server.url);
  assert.deepEqual(counts.before, ["online", "visibilitychange"]);
  assert.equal(counts.after, 0, "listeners removed");
  assert.equal(counts.timers, 0, "no timer left (the hidden timer included)");
  assert.equal(counts.state, "closed");
});
