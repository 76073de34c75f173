// Tab sharing in Chromium: eight pages of one origin subscribing with `shared: true` open one
// `/events` stream between them (counted at the proxy); closing the leader's page hands the
// stream to another page, and every remaining page logs exactly the published sequence: no
// gap, no duplicate. A page that joins with an older `lastEventId` catches up from the node's
// history (the leader's relays start later) and then follows the relay. Skipped, with the reason, when Chromium or playwright-core is missing.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { browserSkipReason, launchChromium, openPage, startPageServer } from "./browser-helpers.js";
import { entry, publishBatch, sleep, startProxy, startServer, waitFor } from "./helpers.js";

const skip = (await browserSkipReason()) ?? false;
if (skip) console.log(`# browser tests skipped: ${skip}`);

const PAGES = 8;
const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) await f();
});

/** Polls every page's state until `cond(states)` holds (30 s at most). */
async function until(what, pages, cond) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const seen = await Promise.all(pages.map((p) => p.evaluate(() => ({ log: window.log, lost: window.lost, states: window.states, errors: window.errors, last: window.sub.lastEventId, leader: window.sub.leader }))));
    if (cond(seen)) return seen;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(seen.map((s) => [s.log.length, s.last, s.leader, s.states.join(",")]))}`);
    await sleep(50);
  }
}

test("eight shared pages: one stream; closing the leader hands over with no gap, no duplicate", { skip, timeout: 90_000 }, async () => {
  const site = await startPageServer();
  cleanups.push(() => site.close());
  const server = await startServer(["--retry-ms", "50", "--heartbeat-ms", "200", "--cors-origin", site.origin]);
  cleanups.push(() => server.stop());
  const proxy = await startProxy(server);
  cleanups.push(() => proxy.close());
  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  const context = await browser.newContext();
  cleanups.push(() => context.close());

  const topics = ["s1", "s2"];
  const options = { shared: true, backoffMinMs: 20, backoffMaxMs: 200, idleTimeoutMs: 5000 };
  const pages = [];
  for (let i = 0; i < PAGES; i++) {
    const page = await openPage(context, site.origin);
    await page.evaluate(([url, t, o]) => window.start(url, t, o), [proxy.url, topics, options]);
    pages.push(page);
  }
  let seen = await until("every page live", pages, (all) => all.every((s) => s.states.includes("live")));
  assert.equal(seen.filter((s) => s.leader).length, 1, "one leader");
  assert.equal(proxy.stats.streams, 1, "one /events stream for eight pages");
  assert.equal(proxy.streams().length, 1);

  const published = [];
  const publish = async (n) => {
    const from = published.length;
    const events = Array.from({ length: n }, (_, i) => ({ topic: topics[(from + i) % 2], data: String(from + i) }));
    published.push(...(await publishBatch(server.url, events)));
  };
  for (let b = 0; b < 5; b++) {
    await publish(20);
    await sleep(10);
  }
  seen = await until("the first events everywhere", pages, (all) => all.every((s) => s.last === published.at(-1).id));
  const leader = seen.findIndex((s) => s.leader);
  // Close the leader while events keep coming.
  const closing = pages[leader].close();
  for (let b = 0; b < 15; b++) {
    await publish(20);
    await sleep(10);
  }
  await closing;
  const rest = pages.filter((_, i) => i !== leader);
  const lastId = published.at(-1).id;
  seen = await until("every remaining page to get every event", rest, (all) => all.every((s) => s.last === lastId));
  await sleep(300); // anything extra (a duplicate) would arrive now
  seen = await until("the logs", rest, () => true);

  assert.equal(seen.filter((s) => s.leader).length, 1, "one new leader");
  assert.equal(proxy.stats.streams, 2, `the new leader opened the only other stream (streams: ${proxy.stats.streams})`);
  assert.equal(proxy.streams().length, 1, "one stream open after the handover");
  for (const [i, s] of seen.entries()) {
    assert.deepEqual(s.lost, [], `page ${i}: nothing lost`);
    assert.deepEqual(s.errors, [], `page ${i}: no error`);
    assert.deepEqual(s.log.map(entry), published.map(entry), `page ${i}: exactly the published sequence`);
  }

  // A ninth page joins with an older resume point: it fills from the node's history up to
  // what the leader relays, then follows; it opens no stream of its own.
  const late = await openPage(context, site.origin);
  const from = published[19].id;
  await late.evaluate(([url, t, o]) => window.start(url, t, o), [proxy.url, topics, { ...options, lastEventId: from }]);
  await publish(20);
  const [joined] = await until("the late page to catch up", [late], ([s]) => s.last === published.at(-1).id);
  await sleep(300);
  const [final] = await until("the late page's log", [late], () => true);
  assert.equal(joined.leader, false);
  assert.deepEqual(final.lost, []);
  assert.deepEqual(final.log.map(entry), published.slice(20).map(entry), "the late page: everything after its lastEventId");
  assert.equal(proxy.stats.streams, 2, "the late page opened no stream");
});
