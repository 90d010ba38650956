// Pipelined requests over one raw loopback socket: three requests sent in one
// write get three answers, in order, each complete (a server that dropped
// what it read ahead answered only the first). The middle one carries a body,
// so request boundaries after a body are checked too.
// Usage: node serve_pipelining.mjs <keel> <model dir>
import net from 'node:net';
import path from 'node:path';
import { check, startServer, stopServer } from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const id = path.basename(model);

// Splits a byte stream into the HTTP responses it holds (Content-Length framed).
function splitResponses(buf) {
  const out = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString('latin1');
    const m = head.match(/\r\ncontent-length:\s*(\d+)/i);
    check(m, `every pipelined answer has a Content-Length: ${head}`);
    const len = Number(m[1]);
    if (buf.length < end + 4 + len) break;
    out.push({ status: Number(head.split(' ')[1]), head, body: buf.subarray(end + 4, end + 4 + len).toString('utf8') });
    at = end + 4 + len;
  }
  return { responses: out, rest: buf.length - at };
}

// Sends `bytes` in one write; resolves with everything read until the server closes.
function exchange(port, bytes) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => sock.write(bytes));
    const got = [];
    sock.on('data', (d) => got.push(d));
    sock.on('error', reject);
    sock.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got)); });
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('no close within 20 s')); }, 20000);
  });
}

const srv = await startServer(keel, model);
let ok = false;
try {
  const body = JSON.stringify({ model: id, prompt: 'The', max_tokens: 1, seed: 1 });
  const requests = [
    'GET /health HTTP/1.1\r\nHost: x\r\n\r\n',
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  ];
  const raw = await exchange(srv.port, Buffer.from(requests.join(''), 'utf8'));
  const { responses, rest } = splitResponses(raw);
  check(responses.length === 3, `three pipelined requests, ${responses.length} answers: ${raw.toString('latin1').slice(0, 400)}`);
  check(rest === 0, `${rest} bytes after the third answer`);
  check(responses.every((r) => r.status === 200), `statuses ${responses.map((r) => r.status)}`);
  const [health, completion, models] = responses.map((r) => JSON.parse(r.body));
  check(health.status === 'ok', `first answer is /health's: ${responses[0].body}`);
  check(completion.object === 'text_completion' && completion.usage.completion_tokens === 1,
    `second answer is the completion's: ${responses[1].body}`);
  check(models.object === 'list' && models.data[0].id === id, `third answer is /v1/models': ${responses[2].body}`);
  check(/\r\nconnection: close/i.test(responses[2].head), 'the last answer closes the connection');
  console.log(`3 requests in one write: 3 answers in order (${responses.map((r) => r.status).join(', ')})`);
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('pipelining: all checks passed');
