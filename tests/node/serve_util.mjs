// Shared helpers of the `keel serve` tests: start the server on a free
// loopback port, stop it with SIGTERM and check a clean exit, raw HTTP over
// sockets, SSE parsing, OpenAI error-object checks, process memory.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

// `keel generate --run <model> --prompt <prompt> ...args`: checks that stdout
// is exactly the prompt, the continuation and a newline, and returns the
// continuation and stderr.
export function generateText(keel, model, prompt, args) {
  const r = spawnSync(keel, ['generate', '--run', model, '--prompt', prompt, ...args],
    { encoding: 'utf8' });
  check(r.status === 0, `keel generate ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  check(r.stdout.startsWith(prompt) && r.stdout.endsWith('\n'),
    `stdout is the prompt, the continuation and a newline: ${JSON.stringify(r.stdout)}`);
  return { text: r.stdout.slice(prompt.length, -1), stderr: r.stderr };
}

// POST /v1/completions for `prompt` on the model folder's id; returns the text.
export async function completeText(base, model, prompt, body) {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: path.basename(model), prompt, ...body }),
  });
  const j = await res.json();
  check(res.status === 200, `completion status ${res.status}: ${JSON.stringify(j)}`);
  return j.choices[0].text;
}

// Starts `keel serve --model <model> --port 0` and resolves once it prints
// "listening on http://HOST:PORT".
export function startServer(keel, model, extra = []) {
  const args = ['serve', '--model', model, '--host', '127.0.0.1', '--port', '0', ...extra];
  const proc = spawn(keel, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  proc.stderr.on('data', (d) => process.stderr.write(`[server] ${d}`));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${out}`)), 60000);
    proc.stdout.on('data', (d) => {
      out += d.toString();
      const m = out.match(/listening on http:\/\/([0-9.]+):(\d+)/);
      if (m && !proc.started) {
        proc.started = true;
        clearTimeout(timer);
        const port = Number(m[2]);
        resolve({ proc, port, base: `http://127.0.0.1:${port}`, exited, output: () => out });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      if (!proc.started) reject(new Error(`server exited (code ${code}, signal ${signal}):\n${out}`));
    });
  });
}

// SIGTERM, then the exit code must be 0 within `timeoutMs`.
export async function stopServer(srv, timeoutMs = 30000) {
  srv.proc.kill('SIGTERM');
  let timer;
  const res = await Promise.race([
    srv.exited,
    new Promise((r) => { timer = setTimeout(() => r({ code: 'timeout' }), timeoutMs); }),
  ]);
  clearTimeout(timer); // a pending timer would hold node for timeoutMs after the test
  if (res.code === 'timeout') srv.proc.kill('SIGKILL');
  check(res.code === 0, `server exit after SIGTERM: ${JSON.stringify(res)}\n${srv.output()}`);
  return srv.output();
}

// Resident memory of a process in bytes.
export function rssBytes(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return Number(m[1]) * 1024;
}

// Sends `head` (string) and then `body` (Buffer/string) over a fresh socket;
// resolves with {status, headers, body} once the server closes or answers
// a complete Content-Length response. Write errors after the answer (the
// server closing early on an oversized body) are tolerated.
export function rawRequest(port, head, body = '', { timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    let done = false;
    const finish = () => {
      if (done) return;
      const buf = Buffer.concat(chunks);
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const headText = buf.subarray(0, i).toString('latin1');
      const status = Number(headText.split(' ')[1]);
      const headers = {};
      for (const line of headText.split('\r\n').slice(1)) {
        const k = line.indexOf(':');
        headers[line.slice(0, k).trim().toLowerCase()] = line.slice(k + 1).trim();
      }
      const rest = buf.subarray(i + 4);
      if (headers['content-length'] !== undefined && rest.length < Number(headers['content-length']))
        return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      // Only this response's body: a server that kept reading the connection
      // may have answered more requests behind it.
      const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : rest.length;
      resolve({ status, headers, body: rest.subarray(0, len).toString('utf8') });
    };
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer in ${timeoutMs} ms to ${head.split('\r\n')[0]}`));
    }, timeoutMs);
    sock.on('data', (d) => {
      chunks.push(d);
      finish();
    });
    sock.on('error', () => {}); // EPIPE/ECONNRESET after an early answer
    sock.on('close', () => {
      finish();
      if (!done) {
        clearTimeout(timer);
        reject(new Error(`connection closed without an answer to ${head.split('\r\n')[0]}`));
      }
    });
    sock.on('connect', async () => {
      sock.write(head);
      if (typeof body === 'function') await body(sock);
      else if (body.length) sock.write(body);
    });
  });
}

// POST `payload` (an object is JSON-encoded; a string/Buffer goes as is).
export function rawPost(port, path, payload, extraHeaders = '') {
  const body = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload), 'utf8');
  const head =
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${body.length}\r\nConnection: close\r\n${extraHeaders}\r\n`;
  return rawRequest(port, head, body);
}

// An OpenAI error object: {"error": {"message", "type", "param", "code"}}.
export function checkErrorObject(res, status, { param, code } = {}, what = '') {
  check(res.status === status, `${what}: status ${res.status}, want ${status}; body ${res.body}`);
  let j;
  try {
    j = JSON.parse(res.body);
  } catch (e) {
    throw new Error(`${what}: error body is not JSON: ${res.body}`);
  }
  const e = j.error;
  check(e && typeof e.message === 'string' && e.message.length > 0, `${what}: error.message in ${res.body}`);
  check(typeof e.type === 'string', `${what}: error.type in ${res.body}`);
  check('param' in e && 'code' in e, `${what}: error.param/code keys in ${res.body}`);
  if (param !== undefined) check(e.param === param, `${what}: param ${e.param}, want ${param}`);
  if (code !== undefined) check(e.code === code, `${what}: code ${e.code}, want ${code}`);
  return e;
}

// Streams a request with fetch and parses the SSE events. Resolves with
// {events: [parsed JSON], done: saw [DONE], text, finish, ttftMs, totalMs}.
export async function streamRequest(base, path, body) {
  const t0 = performance.now();
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (res.status !== 200) throw new Error(`stream status ${res.status}: ${await res.text()}`);
  check((res.headers.get('content-type') || '').startsWith('text/event-stream'), 'SSE content type');
  const decoder = new TextDecoder();
  let buf = '';
  const out = { events: [], done: false, text: '', finish: null, ttftMs: null };
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      check(ev.startsWith('data: '), `SSE event framing: ${JSON.stringify(ev)}`);
      const data = ev.slice(6);
      if (data === '[DONE]') {
        out.done = true;
        continue;
      }
      check(!out.done, 'event after [DONE]');
      const j = JSON.parse(data);
      if (j.error) throw new Error(`stream error event: ${data}`);
      out.events.push(j);
      for (const c of j.choices || []) {
        const piece = c.text ?? c.delta?.content ?? '';
        if (piece && out.ttftMs === null) out.ttftMs = performance.now() - t0;
        out.text += piece;
        if (c.finish_reason) out.finish = c.finish_reason;
      }
    }
  }
  out.totalMs = performance.now() - t0;
  check(buf === '', `trailing bytes after the last event: ${JSON.stringify(buf)}`);
  return out;
}

// The value of an unlabelled sample in Prometheus text.
export function metricValue(text, name) {
  const m = text.match(new RegExp(`^${name} ([0-9.e+-]+|NaN|\\+Inf)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
