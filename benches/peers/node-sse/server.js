'use strict';
// A Server-Sent Events fan-out server written the plain Node way: the `http` module, a Set of
// open responses per topic, one `res.write` per event per subscriber.
//
//   GET  /events?topic=T   streams `id: N\ndata: ...\n\n`
//   POST /publish?topic=T  text body -> 202 {"id":N}
//
// Usage: node server.js [PORT] [HOST]   (default 18083 127.0.0.1)

const http = require('node:http');

const port = Number(process.argv[2] || 18083);
const host = process.argv[3] || '127.0.0.1';
const topics = new Map(); // topic -> Set<ServerResponse>
let nextId = 0;

function subscribers(topic) {
  let set = topics.get(topic);
  if (!set) {
    set = new Set();
    topics.set(topic, set);
  }
  return set;
}

function frame(id, data) {
  // Every line of the data becomes its own `data:` line.
  return `id: ${id}\ndata: ${data.split(/\r\n|\r|\n/).join('\ndata: ')}\n\n`;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const topic = url.searchParams.get('topic');
  if (req.method === 'GET' && url.pathname === '/events' && topic) {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
    res.write(': ok\n\n');
    const set = subscribers(topic);
    set.add(res);
    req.on('close', () => set.delete(res));
    return;
  }
  if (req.method === 'POST' && url.pathname === '/publish' && topic) {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const id = ++nextId;
      const msg = frame(id, Buffer.concat(chunks).toString('utf8'));
      for (const sub of subscribers(topic)) sub.write(msg);
      const answer = JSON.stringify({ id });
      res.writeHead(202, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(answer) });
      res.end(answer);
    });
    return;
  }
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"error":"not found"}');
});

// Streams live for the whole run: no request or keep-alive timeout may close them.
server.requestTimeout = 0;
server.headersTimeout = 0;
server.keepAliveTimeout = 75_000;
server.maxConnections = 100_000;
server.listen(port, host, () => console.error(`node-sse listening on ${host}:${port}`));
process.on('SIGTERM', () => process.exit(0));
