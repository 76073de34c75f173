// Test helpers: the real sse-edge release binary on port 0, a fault-injecting TCP proxy in
// front of it, publishing, and bounded waiting. Everything started here is stopped by the
// `stop()`/`close()` the tests call from `after()` hooks.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SSE_EDGE_BIN ?? path.resolve(here, "../../../target/release/sse-edge");

/** Starts sse-edge with `args` on 127.0.0.1:0; resolves once it logged its address. */
/** Node options of the fault tests: small outboxes and a tiny send buffer (so throttled reads
 * make the node send `gap`), a long history (so every gap can be filled), quick retries. */
export const FAULT_SERVER_ARGS = [
  "--retry-ms", "50",
  "--heartbeat-ms", "200",
  "--outbox-max-events", "16",
  "--outbox-max-bytes", "16384",
  "--send-buffer-bytes", "4096",
  "--history-max-events", "5000",
  "--history-max-bytes", "16777216",
];

export function startServer(args = []) {
  const child = spawn(BIN, ["--listen", "127.0.0.1:0", "--threads", "2", ...args], {
    env: { ...process.env, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`sse-edge logged no address within 10 s:\n${log.join("\n")}`));
    }, 10_000);
    let rest = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      rest += chunk;
      const lines = rest.split("\n");
      rest = lines.pop();
      for (const line of lines) {
        if (log.length < 5000) log.push(line);
        const m = /sse-edge listening on ([0-9.]+:[0-9]+):/.exec(line);
        if (m) {
          clearTimeout(timer);
          const [host, port] = m[1].split(":");
          resolve({
            host,
            port: Number(port),
            url: `http://${m[1]}`,
            log,
            child,
            stop: () => stopChild(child),
          });
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`sse-edge exited (${code}) before logging its address:\n${log.join("\n")}`));
    });
  });
}

function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill("SIGKILL"), 3000);
    child.once("exit", () => {
      clearTimeout(t);
      resolve();
    });
    // Twice: the first SIGTERM drains, the second exits at once.
    child.kill("SIGTERM");
    child.kill("SIGTERM");
  });
}

/**
 * A TCP proxy to `target` that can, on demand: cut every connection; hold the open ones
 * (forward nothing more to the client); cut the next stream in the middle of a frame; pause
 * reading from the server (the node's outbox then overflows and it sends `gap`).
 */
export function startProxy(target) {
  let current = target;
  const pairs = new Set();
  const stats = { connections: 0, streams: 0, cuts: 0, midFrameCuts: 0, duplicated: 0, gapsSeen: 0, streamOpenedAt: [], shutdownSeenAt: [] };
  let cutMidFrame = false;
  let duplicate = false;
  const server = net.createServer((client) => {
    stats.connections++;
    const upstream = net.connect(current.port, current.host);
    const pair = { client, upstream, stream: false, held: false };
    pairs.add(pair);
    const done = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", done);
    upstream.on("error", done);
    client.on("close", done);
    upstream.on("close", done);
    client.on("data", (d) => {
      if (!pair.stream && d.toString("latin1").startsWith("GET /events")) {
        pair.stream = true;
        stats.streams++;
        stats.streamOpenedAt.push(performance.now());
      }
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (pair.held) return;
      const text = d.toString("latin1");
      stats.gapsSeen += text.split("event: gap\n").length - 1;
      if (text.includes("event: server-shutdown\n")) stats.shutdownSeenAt.push(performance.now());
      if (cutMidFrame && pair.stream) {
        const at = text.indexOf("\ndata: ", text.indexOf("id: "));
        if (text.indexOf("id: ") >= 0 && at >= 0) {
          cutMidFrame = false;
          stats.midFrameCuts++;
          // The frame's id, topic and part of its data, then the cut.
          client.write(d.subarray(0, at + 9), () => done());
          return;
        }
      }
      if (duplicate && pair.stream) {
        // The whole frames of this chunk, sent twice (the chunk may start or end mid-frame).
        const a = text.indexOf("\n\n") + 2;
        const b = text.lastIndexOf("\n\n") + 2;
        if (a >= 2 && b > a && text.slice(a, b).includes("id: ")) {
          duplicate = false;
          stats.duplicated++;
          client.write(Buffer.concat([d.subarray(0, b), d.subarray(a, b), d.subarray(b)]));
          return;
        }
      }
      client.write(d);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        stats,
        streams: () => [...pairs].filter((p) => p.stream),
        /** New connections go to `t` (a restarted node). */
        setTarget(t) {
          current = t;
        },
        /** Cuts every connection. */
        cutAll() {
          stats.cuts++;
          for (const p of [...pairs]) {
            p.client.destroy();
            p.upstream.destroy();
          }
        },
        /** Holds every open stream: nothing more reaches the client, the socket stays open. */
        holdStreams() {
          for (const p of pairs) if (p.stream) p.held = true;
        },
        /** Cuts the next stream chunk that holds a frame in the middle of that frame. */
        cutNextMidFrame() {
          cutMidFrame = true;
        },
        /** Sends the whole frames of the next stream chunk that has some twice. */
        duplicateNext() {
          duplicate = true;
        },
        /** Stops reading from the node on every open stream for `ms`. */
        throttle(ms) {
          const paused = [...pairs].filter((p) => p.stream);
          for (const p of paused) p.upstream.pause();
          return sleep(ms).then(() => {
            for (const p of paused) p.upstream.resume();
          });
        },
        close() {
          for (const p of [...pairs]) {
            p.client.destroy();
            p.upstream.destroy();
          }
          return new Promise((r) => server.close(() => r()));
        },
      });
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds, checking every 20 ms; throws after `ms`. */
export async function waitFor(what, cond, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Publishes `events` ([{topic, data}]) as one NDJSON batch; resolves to their ids (strings). */
export async function publishBatch(url, events) {
  const body = events.map((e) => JSON.stringify({ topic: e.topic, data: e.data })).join("\n");
  const res = await fetch(`${url}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/x-ndjson" },
    body,
  });
  const text = await res.text();
  if (res.status !== 202) throw new Error(`publish: ${res.status} ${text}`);
  // Exact ids: quote them before parsing.
  const ids = JSON.parse(text.replace(/(\d+)/g, '"$1"')).ids;
  return events.map((e, i) => ({ id: ids[i], topic: e.topic, data: e.data }));
}

/** An HS256 subscribe token for `topics`, expiring `expInS` seconds from now. */
export function token(secret, topics, expInS, sub = "tester") {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const claims = b64({ sub, topics, exp: Math.floor(Date.now() / 1000) + expInS });
  const sig = createHmac("sha256", secret).update(`${head}.${claims}`).digest("base64url");
  return `${head}.${claims}.${sig}`;
}

/** A client log entry compared with the published sequence. */
export const entry = (e) => `${e.topic} ${e.id} ${e.data}`;
