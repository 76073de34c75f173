// The size figure in the README is of code that runs: scripts/size.mjs strips comments and
// whitespace, and the server-free tests (parser, ids, backoff) pass against that stripped
// copy. The whole library, stripped and gzipped, stays under a budget far below
// centrifuge-js's ~46 KB.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

import { measure, strip } from "../scripts/size.mjs";

/** The gzipped library must stay under this (bytes): a quarter of centrifuge-js. */
const GZIP_BUDGET = 12 * 1024;

const here = path.dirname(fileURLToPath(import.meta.url));
const tmp = mkdtempSync(path.join(tmpdir(), "sse-edge-client-size-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

test("strip keeps strings, templates, regexes and division; drops comments", () => {
  const src = [
    "// line comment",
    "const a = `x ${ {b: 1}.b + `in ${'}'} ner` } // not a comment`; /* block */",
    "const r = /\\/+$/g, s = '//', d = 4 / 2 / 1;",
    "if (x) return - -y;",
    "const t = typeof /a[/]b/.source;",
    "const w = s.split(/[ ]+/);",
  ].join("\n");
  assert.equal(
    strip(src),
    "const a=`x ${{b:1}.b+`in ${'}'} ner`} // not a comment`;\n" +
      "const r=/\\/+$/g,s='//',d=4/2/1;\n" +
      "if(x)return- -y;\n" +
      "const t=typeof/a[/]b/.source;\n" +
      "const w=s.split(/[ ]+/);\n",
  );
});

test("the server-free tests pass against the stripped library, which is under budget", () => {
  const { files, total } = measure();
  mkdirSync(path.join(tmp, "src"));
  mkdirSync(path.join(tmp, "test"));
  for (const f of files) writeFileSync(path.join(tmp, "src", f.file), f.code);
  writeFileSync(path.join(tmp, "package.json"), '{"type":"module"}');
  const tests = ["parser.test.js", "ids.test.js", "backoff.test.js"];
  for (const t of tests) cpSync(path.join(here, t), path.join(tmp, "test", t));
  const run = spawnSync(process.execPath, ["--test", ...tests.map((t) => path.join(tmp, "test", t))], {
    encoding: "utf8",
    timeout: 60_000,
    // A nested `node --test` reports to its parent runner when this is set; we want text.
    env: { ...process.env, NODE_TEST_CONTEXT: undefined },
  });
  assert.equal(run.status, 0, `stripped library failed its tests:\n${run.stdout}\n${run.stderr}`);
  assert.match(run.stdout, /# fail 0/);
  assert.ok(total.stripped < total.raw, "stripping shrinks the code");
  assert.ok(total.gzip < GZIP_BUDGET, `${total.gzip} bytes gzipped, budget ${GZIP_BUDGET}`);
});
