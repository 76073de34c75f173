// Prints the size of the client's code: raw, "minified-ish" (comments and whitespace
// stripped, names kept) and that gzipped (level 9), per file under src/ and in total.
// No dependencies: a small JS tokenizer enough for this code base (strings, template
// literals with nested `${}`, regex literals, comments). `node scripts/size.mjs`; with
// `--json` it prints the figures as JSON. size.test.js imports the stripped copy and checks
// it still works, so the figure is of code that runs.

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src");

const isWord = (c) => c !== undefined && /[A-Za-z0-9_$]/.test(c);
// After these a `/` starts a regex literal, not a division.
const BEFORE_REGEX = new Set([..."(,=:[!&|?{};+-*%<>~^", ""]);
const REGEX_KEYWORDS = new Set(["return", "typeof", "case", "do", "else", "in", "of", "void", "throw", "new", "delete"]);

/** Returns `code` without comments and with whitespace collapsed (a newline kept where one
 * ended a run of whitespace, so automatic semicolon insertion is unchanged). */
export function strip(code) {
  let out = "";
  let i = 0;
  let pendingSpace = ""; // "", " " or "\n": whitespace seen since the last token
  const depth = []; // brace depth per open template literal `${`
  const lastToken = () => {
    const m = /([A-Za-z0-9_$]+|\S)$/.exec(out);
    return m ? m[1] : "";
  };
  const emit = (tok) => {
    if (pendingSpace) {
      const prev = out.at(-1);
      if (pendingSpace === "\n" && out.length > 0) out += "\n";
      else if (isWord(prev) && isWord(tok[0])) out += " ";
      // `a - -b`, `a + +b`: keep them apart
      else if ((prev === "+" || prev === "-") && tok[0] === prev) out += " ";
    }
    pendingSpace = "";
    out += tok;
  };
  const readString = (q) => {
    let j = i + 1;
    while (j < code.length && code[j] !== q) j += code[j] === "\\" ? 2 : 1;
    emit(code.slice(i, j + 1));
    i = j + 1;
  };
  // A template literal from `i` (at "`" or just after a "}" closing a `${`) to its end or to
  // the next `${`.
  const readTemplate = (start) => {
    let j = start;
    for (;;) {
      if (j >= code.length) throw new Error("unterminated template literal");
      if (code[j] === "\\") j += 2;
      else if (code[j] === "`") {
        emit(code.slice(i, j + 1));
        i = j + 1;
        return;
      } else if (code[j] === "$" && code[j + 1] === "{") {
        emit(code.slice(i, j + 2));
        i = j + 2;
        depth.push(0);
        return;
      } else j++;
    }
  };
  while (i < code.length) {
    const c = code[i];
    const d = code[i + 1];
    if (/\s/.test(c)) {
      if (c === "\n") pendingSpace = "\n";
      else if (!pendingSpace) pendingSpace = " ";
      i++;
    } else if (c === "/" && d === "/") {
      while (i < code.length && code[i] !== "\n") i++;
    } else if (c === "/" && d === "*") {
      const end = code.indexOf("*/", i + 2);
      if (end < 0) throw new Error("unterminated comment");
      i = end + 2;
      if (!pendingSpace) pendingSpace = " ";
    } else if (c === '"' || c === "'") {
      readString(c);
    } else if (c === "`") {
      readTemplate(i + 1);
    } else if (c === "/" && (BEFORE_REGEX.has(lastToken()) || REGEX_KEYWORDS.has(lastToken()))) {
      let j = i + 1;
      let cls = false;
      while (j < code.length && (cls || code[j] !== "/")) {
        if (code[j] === "\\") j++;
        else if (code[j] === "[") cls = true;
        else if (code[j] === "]") cls = false;
        else if (code[j] === "\n") throw new Error(`unterminated regex at ${i}`);
        j++;
      }
      j++;
      while (isWord(code[j])) j++; // flags
      emit(code.slice(i, j));
      i = j;
    } else if (c === "{" && depth.length > 0) {
      depth[depth.length - 1]++;
      emit(c);
      i++;
    } else if (c === "}" && depth.length > 0 && depth.at(-1) === 0) {
      depth.pop();
      pendingSpace = "";
      readTemplate(i + 1);
    } else if (c === "}" && depth.length > 0) {
      depth[depth.length - 1]--;
      emit(c);
      i++;
    } else if (isWord(c)) {
      let j = i;
      while (isWord(code[j])) j++;
      emit(code.slice(i, j));
      i = j;
    } else {
      emit(c);
      i++;
    }
  }
  return out + "\n";
}

/** Sizes of every file under src/ and their total: { files: [{ file, raw, stripped, gzip }], total }. */
export function measure() {
  const files = readdirSync(SRC)
    .filter((f) => f.endsWith(".js"))
    .sort()
    .map((file) => {
      const code = readFileSync(path.join(SRC, file), "utf8");
      const stripped = strip(code);
      return { file, raw: Buffer.byteLength(code), stripped: Buffer.byteLength(stripped), gzip: gzipSync(stripped, { level: 9 }).length, code: stripped };
    });
  // The whole library as one gzip stream, as a bundler would ship it.
  const all = files.map((f) => f.code).join("");
  const total = {
    raw: files.reduce((s, f) => s + f.raw, 0),
    stripped: Buffer.byteLength(all),
    gzip: gzipSync(all, { level: 9 }).length,
  };
  return { files, total };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { files, total } = measure();
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ files: files.map(({ code, ...f }) => f), total }, null, 2));
  } else {
    const kb = (n) => (n / 1024).toFixed(1).padStart(6) + " KB";
    console.log("file              raw      stripped  stripped+gzip");
    for (const f of files) console.log(`${f.file.padEnd(12)} ${kb(f.raw)}  ${kb(f.stripped)}  ${kb(f.gzip)}`);
    console.log(`${"total".padEnd(12)} ${kb(total.raw)}  ${kb(total.stripped)}  ${kb(total.gzip)}`);
  }
}
