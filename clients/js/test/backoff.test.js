// Reconnect backoff: full jitter, uniform over [0, min(max, min * 2^failures)). (That a
// reconnect never comes sooner than the node's `retry:` is shown in restart.test.js.)

import assert from "node:assert/strict";
import { test } from "node:test";

import { subscribe } from "../src/index.js";

test("backoff is full jitter under an exponential cap bounded by backoffMaxMs", () => {
  const sub = subscribe("http://127.0.0.1:9", {
    topics: ["t"],
    backoffMinMs: 100,
    backoffMaxMs: 1000,
    fetch: () => new Promise(() => {}), // never answers: no real connection is made
  });
  try {
    for (const [failures, cap] of [[0, 100], [1, 200], [2, 400], [3, 800], [4, 1000], [40, 1000]]) {
      sub.failures = failures;
      const samples = Array.from({ length: 2000 }, () => sub.backoff());
      assert.ok(samples.every((d) => d >= 0 && d < cap), `failures ${failures}: above ${cap}`);
      assert.ok(Math.max(...samples) > cap * 0.9, `failures ${failures}: the top of the range is used`);
      assert.ok(Math.min(...samples) < cap * 0.1, `failures ${failures}: the bottom of the range is used`);
    }
  } finally {
    sub.close();
  }
  assert.equal(sub.state, "closed");
});
