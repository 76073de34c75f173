// A streaming event-stream parser written from the WHATWG HTML standard, "Interpreting an
// event stream" (9.2.6), for the frames sse-edge sends.
//
// - Bytes are decoded as UTF-8 in streaming mode (a leading BOM is dropped).
// - Lines end at CRLF, LF or CR; a CR at the end of a chunk may be followed by the LF of the
//   next chunk, which then ends nothing.
// - An empty line dispatches the frame; a line starting with ":" is a comment; a field name
//   ends at the first ":" and one space after it is removed.
// - `data` lines append (joined with LF); `event`, `id`, `retry` (ASCII digits only) as in
//   the standard; sse-edge's own fields `topic`, `class`, `key` are kept. Other fields are
//   ignored, exactly as EventSource does.
// - Unlike EventSource, the id is per frame: a frame without an `id:` line has id null (the
//   node's notices carry none), so a notice never looks like a published event.
// - A frame without any data line dispatches nothing (but a `retry:` in it still counts).
// - `end()` discards a frame cut in the middle: it is never dispatched.

/** @typedef {{id: string|null, event: string, data: string, topic: string|null, class: string, key: string|null}} Frame */

export class EventStreamParser {
  /**
   * @param {(frame: Frame) => void} onFrame called for each complete frame with data
   * @param {(ms: number) => void} onRetry called for each valid `retry:` field
   */
  constructor(onFrame, onRetry) {
    this.onFrame = onFrame;
    this.onRetry = onRetry;
    this.decoder = new TextDecoder("utf-8", { ignoreBOM: false });
    this.buf = "";
    this.skipLF = false;
    this.reset();
  }

  reset() {
    this.data = null;
    this.fields = { id: null, event: "", topic: null, class: "reliable", key: null };
  }

  /** Feeds one chunk of bytes (Uint8Array) or text. */
  push(chunk) {
    const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    this.buf += text;
    let start = 0;
    const buf = this.buf;
    for (let i = 0; i < buf.length; i++) {
      const c = buf.charCodeAt(i);
      if (this.skipLF) {
        this.skipLF = false;
        if (c === 10) {
          start = i + 1;
          continue;
        }
      }
      if (c === 10 || c === 13) {
        this.line(buf.slice(start, i));
        if (c === 13) this.skipLF = true;
        start = i + 1;
      }
    }
    this.buf = buf.slice(start);
  }

  /** The stream ended or was cut: whatever frame is incomplete is discarded. */
  end() {
    this.buf = "";
    this.skipLF = false;
    this.decoder = new TextDecoder("utf-8", { ignoreBOM: false });
    this.reset();
  }

  line(line) {
    if (line === "") {
      if (this.data !== null) {
        const f = this.fields;
        this.onFrame({ id: f.id, event: f.event || "message", data: this.data, topic: f.topic, class: f.class, key: f.key });
      }
      this.reset();
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return;
    const colon = line.indexOf(":");
    let name = line;
    let value = "";
    if (colon >= 0) {
      name = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (name) {
      case "data":
        this.data = this.data === null ? value : this.data + "\n" + value;
        break;
      case "event":
        this.fields.event = value;
        break;
      case "id":
        if (!value.includes("\0")) this.fields.id = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(Number(value));
        break;
      case "topic":
        this.fields.topic = value;
        break;
      case "class":
        this.fields.class = value;
        break;
      case "key":
        this.fields.key = value;
        break;
      default:
        break;
    }
  }
}
