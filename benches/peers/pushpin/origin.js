'use strict';
// The GRIP origin and publish adapter that Pushpin needs (Pushpin is a proxy: it holds the
// streams, an application behind it says which channel a stream belongs to and publishes).
//
//   GET  /events?topic=T   -> 200 text/event-stream, `Grip-Hold: stream`, `Grip-Channel: T`,
//                             body `: ok\n\n` (Pushpin sends it, then holds the stream open)
//   POST /publish?topic=T  -> 202 {"id":N} at once; the event `id: N\ndata: ...\n\n` is queued
//                             and sent to Pushpin's control API (POST /publish/ on the control
//                             port) as GRIP items. One control request is in flight at a time,
//                             events published meanwhile go in the next one (batched, in order).
//
// The subscribe side is what any GRIP backend does. The publish side is the adapter sse-load
// needs, because it publishes with `POST /publish?topic=T` and a text body. It is part of the
// measured path for Pushpin only; its CPU is reported separately.
//
// Usage: node origin.js [PORT] [CONTROL_PORT]   (default 18086 5561; 127.0.0.1 only)

const http = require('node:http');

const port = Number(process.argv[2] || 18086);
const controlPort = Number(process.argv[3] || 5561);
const MAX_BATCH = 1000; // items per control request
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let nextId = 0;
let pending = [];
let inFlight = false;
let publishErrors = 0;

function frame(id, data) {
  return `id: ${id}\ndata: ${data.split(/\r\n|\r|\n/).join('\ndata: ')}\n\n`;
}

function flush() {
  if (inFlight || pending.length === 0) return;
  const items = pending.length > MAX_BATCH ? pending.splice(0, MAX_BATCH) : pending;
  if (items === pending) pending = [];
  inFlight = true;
  const body = JSON.stringify({ items });
  const req = http.request(
    {
      host: '127.0.0.1',
      port: controlPort,
      path: '/publish/',
      method: 'POST',
      agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode !== 200) {
          publishErrors += items.length;
          console.error(`control API answered ${res.statusCode}`);
        }
        inFlight = false;
        flush();
      });
    },
  );
  req.on('error', (e) => {
    publishErrors += items.length;
    console.error(`control API: ${e.message}`);
    inFlight = false;
    setTimeout(flush, 10);
  });
  req.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const topic = url.searchParams.get('topic');
  if (req.method === 'GET' && url.pathname === '/events' && topic) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'Grip-Hold': 'stream',
      'Grip-Channel': topic,
      'Grip-Keep-Alive': ':\\n\\n; format=cstring; timeout=25',
    });
    res.end(': ok\n\n');
    return;
  }
  if (req.method === 'POST' && url.pathname === '/publish' && topic) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const id = ++nextId;
      const content = frame(id, Buffer.concat(chunks).toString('utf8'));
      pending.push({ channel: topic, formats: { 'http-stream': { content } } });
      setImmediate(flush);
      const answer = JSON.stringify({ id });
      res.writeHead(202, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(answer) });
      res.end(answer);
    });
    return;
  }
  if (req.method === 'GET' && url.pathname === '/adapter-stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ published: nextId, queued: pending.length, publishErrors }));
    return;
  }
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"error":"not found"}');
});

server.requestTimeout = 0;
server.headersTimeout = 0;
server.keepAliveTimeout = 75_000;
server.listen(port, '127.0.0.1', () => console.error(`pushpin origin+adapter on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
