// Ids are kept as exact decimal strings: a gap notice's range and the polling JSON's ids, both
// written by the node as JSON numbers, survive values above 2^53 (a fake node, no server).

import assert from "node:assert/strict";
import { test } from "node:test";

import { subscribe } from "../src/index.js";

test("ids above 2^53 stay exact from gap notices and polling JSON", async () => {
  // A fake node: a stream with a gap notice whose ids exceed 2^53, and a polling answer.
  const from = "9007199254740993"; // 2^53 + 1: JSON.parse would round it to ...992
  const to = "9007199254740995";
  const calls = [];
  const log = [];
  const fetch = async (url) => {
    calls.push(url);
    if (url.includes("/events?topic=")) {
      const body = `retry: 10\n\nevent: gap\ndata: {"from":${from},"to":${to}}\n\nid: 9007199254740997\ntopic: t\ndata: live\n\n`;
      return new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(body)); } }), { status: 200 });
    }
    const json = `[{"class":"reliable","data":"filled","event":null,"id":9007199254740995,"topic":"t"}]\n`;
    return new Response(json, { status: 200 });
  };
  const sub = subscribe("http://node", { topics: ["t"], fetch, onEvent: (e) => log.push([e.id, e.data]) });
  try {
    for (let i = 0; i < 100 && log.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(calls.some((u) => u.includes("/topics/t/events?after=9007199254740992&")), calls.join(" "));
    assert.deepEqual(log, [["9007199254740995", "filled"], ["9007199254740997", "live"]]);
    assert.equal(sub.lastEventId, "9007199254740997");
  } finally {
    sub.close();
  }
});
