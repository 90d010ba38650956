// SIGTERM while streams are in flight. With the default drain timeout the
// in-flight streams run to their end (finish reason, [DONE]), new requests
// are refused, and the server exits 0. With --drain-timeout 0 the streams
// are cancelled instead: they end with an error event and [DONE], and the
// server still exits 0.
// Usage: node serve_shutdown.mjs <keel> <model dir>
import net from 'node:net';
import path from 'node:path';
import { check, startServer, stopServer } from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const id = path.basename(model);

// Opens a long stream; resolves `started` once the server answers 200 (a
// queued request gets its headers before its first token) and `ended` with
// the whole SSE text when the server closes it.
function openStream(port, maxTokens, n = 1) {
  const body = JSON.stringify({ model: id, prompt: 'The', max_tokens: maxTokens, n, stream: true, ignore_eos: true, temperature: 1, seed: 3 });
  let text = '';
  let startedResolve;
  const started = new Promise((r) => (startedResolve = r));
  const ended = new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    sock.on('data', (d) => {
      text += d.toString();
      if (text.startsWith('HTTP/1.1 200')) startedResolve();
    });
    sock.on('error', () => {});
    sock.on('close', () => resolve(text));
  });
  return { started, ended };
}

async function run(drainArgs, expectFinished) {
  const srv = await startServer(keel, model, ['--max-batch', '1', '--threads', '1', '--backend', 'ref', ...drainArgs]);
  let ok = false;
  try {
    const info = await (await fetch(`${srv.base}/v1/models`)).json();
    const ctx = info.data[0].context_length;
    // Cancelled streams must still be running when the signal lands: with 48
    // tokens the tiny model finished all four first on a busy machine, so
    // those ask for 16 choices of ctx - 8 tokens each.
    const streams = Array.from({ length: 4 }, () => (expectFinished ? openStream(srv.port, 48) : openStream(srv.port, ctx - 8, 16)));
    await Promise.all(streams.map((s) => s.started));
    srv.proc.kill('SIGTERM');
    // Give the signal a moment to land, then a new request must be refused.
    await new Promise((r) => setTimeout(r, 100));
    let refused = '';
    try {
      const r = await fetch(`${srv.base}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: id, prompt: 'x', max_tokens: 2 }) });
      refused = `${r.status}`;
      const j = await r.json();
      check(r.status === 503 && j.error && j.error.code === 'shutting_down', `new request during drain: ${r.status} ${JSON.stringify(j)}`);
    } catch (e) {
      if (e.message.startsWith('check failed')) throw e;
      refused = 'connection refused';  // the listener may already be gone
    }
    const texts = await Promise.all(streams.map((s) => s.ended));
    let cancelled = 0;
    for (const t of texts) {
      check(t.includes('data: [DONE]\n\n'), `stream ends with [DONE]: ...${t.slice(-200)}`);
      const finished = /"finish_reason":"length"/.test(t) && !t.includes('"error"');
      const wasCancelled = t.includes('"error"') && t.includes('"code":"cancelled"');
      check(finished !== wasCancelled, `stream either finished or was cancelled: ...${t.slice(-300)}`);
      if (expectFinished) check(finished, `stream ran to its end: ...${t.slice(-300)}`);
      if (wasCancelled) cancelled++;
    }
    // One decode slot and four long streams: the queued ones cannot have finished.
    if (!expectFinished) check(cancelled >= 1, 'streams in flight past the drain timeout were cancelled');
    ok = true;
    const out = await stopServer(srv); // already signalled: waits for exit code 0
    console.log(`${drainArgs.join(' ') || 'default drain'}: new request -> ${refused}; ${texts.length - cancelled} streams finished, ${cancelled} cancelled; ${out.trim().split('\n').slice(-1)[0]}`);
  } finally {
    if (!ok) srv.proc.kill('SIGKILL');
  }
}

await run([], true);
await run(['--drain-timeout', '0'], false);
console.log('sigterm: all checks passed');
