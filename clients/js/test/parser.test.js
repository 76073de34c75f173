// The streaming event-stream parser against the WHATWG rules: every line end, chunks split
// anywhere (also between CR and LF, and inside a UTF-8 sequence), comments, `retry:`, unknown
// fields ignored, and a frame cut in the middle discarded.

import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStreamParser } from "../src/parser.js";

function parseChunks(chunks) {
  const frames = [];
  const retries = [];
  const p = new EventStreamParser((f) => frames.push(f), (ms) => retries.push(ms));
  for (const c of chunks) p.push(c);
  return { frames, retries, parser: p };
}

const STREAM =
  "\uFEFFretry: 1500\n: ok\n\n" +
  "id: 7\ntopic: jobs\nevent: job.progress\ndata: 42%\n\n" +
  "id: 8\r\ntopic: logs\r\nclass: latest\r\nkey:  k 1\r\ndata: a\r\ndata: b\r\n\r\n" +
  "id: 9\rtopic: t\rclass: droppable\rdata:no space\rdata\r\r" +
  "event: gap\ndata: {\"from\":3,\"to\":9}\n\n" +
  ":\n\n" +
  "id: 10\nunknown: field\nretry: 1x\ndata: héllo ✓\n\n";

const EXPECTED = [
  { id: "7", topic: "jobs", event: "job.progress", data: "42%", class: "reliable", key: null },
  { id: "8", topic: "logs", event: "message", data: "a\nb", class: "latest", key: " k 1" },
  { id: "9", topic: "t", event: "message", data: "no space\n", class: "droppable", key: null },
  { id: null, topic: null, event: "gap", data: '{"from":3,"to":9}', class: "reliable", key: null },
  { id: "10", topic: null, event: "message", data: "héllo ✓", class: "reliable", key: null },
];

test("a whole stream parses as EventSource would, plus topic, class and key", () => {
  const { frames, retries } = parseChunks([new TextEncoder().encode(STREAM)]);
  assert.deepEqual(frames, EXPECTED);
  assert.deepEqual(retries, [1500]);
});

test("every split of the byte stream gives the same frames", () => {
  const bytes = new TextEncoder().encode(STREAM);
  for (let cut = 1; cut < bytes.length; cut++) {
    const { frames } = parseChunks([bytes.subarray(0, cut), bytes.subarray(cut)]);
    assert.deepEqual(frames, EXPECTED, `split at byte ${cut}`);
  }
  const { frames } = parseChunks([...bytes].map((b) => new Uint8Array([b])));
  assert.deepEqual(frames, EXPECTED, "one byte at a time");
});

test("a frame cut in the middle is discarded, and the next stream starts clean", () => {
  const { frames, parser } = parseChunks(["id: 1\ndata: whole\n\nid: 2\ntopic: t\ndata: cut he"]);
  assert.deepEqual(frames.map((f) => f.id), ["1"]);
  parser.end();
  parser.push("data: fresh\n\n");
  assert.deepEqual(frames.at(-1), { id: null, topic: null, event: "message", data: "fresh", class: "reliable", key: null });
  // A frame whose blank line never came is not dispatched either.
  const { frames: none } = parseChunks(["id: 3\ndata: no blank line\n"]);
  assert.deepEqual(none, []);
});
