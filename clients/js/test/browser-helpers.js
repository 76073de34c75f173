// Browser test helpers: a tiny HTTP server on 127.0.0.1 that serves a test page and the
// library (src/) to Chromium, and a headless Chromium driven by playwright-core. The page's
// origin differs from the node's (another port), so the node runs with --cors-origin set to
// it: the library works cross-origin. http://127.0.0.1 is a secure context (Web Locks).
// Everything started here is stopped by the `close()` the tests call from `after()` hooks.

import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.resolve(here, "../src");

/** Debian's chromium (scripts/test installs it; never downloaded). */
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** Why the browser tests cannot run here, or null when they can. */
export async function browserSkipReason() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)`;
  try {
    await import("playwright-core");
  } catch {
    return "playwright-core is not installed (npm ci in clients/js)";
  }
  return null;
}

// The page: loads the library and exposes window.start(url, topics, options), which records
// every callback into window.log / window.lost / window.states.
const PAGE = `<!doctype html><meta charset="utf-8"><title>sse-edge-client test</title>
<script type="module">
import { subscribe } from "/src/index.js";
window.log = []; window.lost = []; window.states = []; window.errors = [];
window.start = (url, topics, options = {}) => {
  window.sub = subscribe(url, {
    topics, ...options,
    onEvent: (e) => window.log.push(e),
    onLost: (r) => window.lost.push(r),
    onState: (s) => window.states.push(s),
    onError: (e) => window.errors.push(String(e)),
  });
};
window.ready = true;
</script>`;

/** Serves the page at / and the library at /src/*.js on 127.0.0.1:0. */
export function startPageServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
      res.end(PAGE);
      return;
    }
    const m = /^\/src\/([a-z-]+\.js)$/.exec(url.pathname);
    if (m && existsSync(path.join(SRC, m[1]))) {
      res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-store" });
      res.end(readFileSync(path.join(SRC, m[1])));
      return;
    }
    res.writeHead(404).end();
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        close: () => {
          server.closeAllConnections();
          return new Promise((r) => server.close(() => r()));
        },
      });
    });
  });
}

/** Headless Chromium (root: --no-sandbox). */
export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--no-proxy-server"],
  });
}

/** Opens the test page in `context` and waits until its module has loaded. */
export async function openPage(context, origin) {
  const page = await context.newPage();
  await page.goto(origin + "/");
  await page.waitForFunction(() => window.ready === true);
  return page;
}
