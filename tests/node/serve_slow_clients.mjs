// Slow clients over raw loopback sockets: 300 connections that each send half
// a request line and then nothing must not make a normal completion wait (a
// fixed pool of connection threads let them hold every thread until the read
// timeout: 6.5-13.6 s for the next request). Threads grow with connections
// up to --max-connections; the bound here is far below the 30 s read timeout
// the starved request used to wait, and far above a loaded machine's latency.
// Usage: node serve_slow_clients.mjs <keel> <model dir>
import net from 'node:net';
import path from 'node:path';
import { check, rawPost, startServer, stopServer } from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const id = path.basename(model);
const SLOW = 300;
// 64 threads started: the 300 slow connections exceed them, so the pool must grow.
const srv = await startServer(keel, model, ['--http-threads', '64']);
const sockets = [];
let ok = false;
try {
  await Promise.all(Array.from({ length: SLOW }, () => new Promise((resolve, reject) => {
    const s = net.connect(srv.port, '127.0.0.1', () => {
      s.write('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le');
      resolve();
    });
    s.on('error', reject);
    sockets.push(s);
  })));
  // Let the server accept all of them and block in their reads.
  await new Promise((r) => setTimeout(r, 500));
  const t0 = Date.now();
  const r = await rawPost(srv.port, '/v1/completions', { model: id, prompt: 'The', max_tokens: 2 });
  const ms = Date.now() - t0;
  console.log(`a completion beside ${SLOW} slow connections: status ${r.status} in ${ms} ms`);
  check(r.status === 200, `completion status ${r.status}: ${r.body}`);
  check(ms < 10000, `the completion waited ${ms} ms behind ${SLOW} slow connections`);
  // The slow connections are still open and the server still serves.
  check(sockets.every((s) => !s.destroyed), 'every slow connection is still open');
  const again = await rawPost(srv.port, '/v1/completions', { model: id, prompt: 'A', max_tokens: 1 });
  check(again.status === 200, `second completion status ${again.status}`);
  ok = true;
} finally {
  for (const s of sockets) s.destroy();
  const out = await stopServer(srv);
  if (!ok) console.log(out);
}
console.log('serve_slow_clients: PASS');
