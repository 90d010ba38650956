// Hostile and malformed input against `keel serve`, over raw sockets: each
// case gets the right 4xx with an OpenAI error object (oversized request
// lines and headers included), a 100 MB body is refused without being held
// in memory, a client that disconnects mid-stream has its request cancelled
// and its slot freed, and the server keeps serving throughout.
// Usage: node serve_bad_input.mjs <keel> <model dir>
import net from 'node:net';
import path from 'node:path';
import {
  check, checkErrorObject, metricValue, rawPost, rawRequest, rssBytes, startServer, stopServer,
} from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const id = path.basename(model);
const srv = await startServer(keel, model, ['--max-body-mb', '1']);
const port = srv.port;

async function stillServing(what) {
  const r = await rawPost(port, '/v1/completions', { model: id, prompt: 'The', max_tokens: 2 });
  check(r.status === 200, `${what}: a good request after it gets 200, got ${r.status} ${r.body}`);
  const j = JSON.parse(r.body);
  check(j.choices[0].text !== undefined && j.usage.completion_tokens >= 1, `${what}: good answer`);
}

let ok = false;
try {
  const info = await (await fetch(`${srv.base}/v1/models`)).json();
  const ctx = info.data[0].context_length;
  check(ctx > 8, `context length ${ctx}`);
  const C = '/v1/completions';
  const chat = '/v1/chat/completions';
  const cases = [
    ['malformed JSON', C, '{"model": "tiny", "prompt": ', 400, { code: 'invalid_json' }],
    ['JSON array body', C, '[1, 2, 3]', 400, { code: 'invalid_json' }],
    ['empty body', C, '', 400, { code: 'invalid_json' }],
    ['prompt of wrong type', C, { model: id, prompt: 42 }, 400, { param: 'prompt', code: 'invalid_type' }],
    ['max_tokens as string', C, { model: id, prompt: 'x', max_tokens: '5' }, 400, { param: 'max_tokens', code: 'invalid_type' }],
    ['temperature as string', C, { model: id, prompt: 'x', temperature: 'hot' }, 400, { param: 'temperature' }],
    ['stream as number', C, { model: id, prompt: 'x', stream: 1 }, 400, { param: 'stream' }],
    ['messages of wrong type', chat, { model: id, messages: 'hi' }, 400, { param: 'messages' }],
    ['message without content', chat, { model: id, messages: [{ role: 'user' }] }, 400, { param: 'messages[0].content' }],
    ['missing model', C, { prompt: 'x' }, 400, { param: 'model' }],
    ['unknown model', C, { model: 'gpt-4', prompt: 'x' }, 404, { param: 'model', code: 'model_not_found' }],
    ['unknown model (chat)', chat, { model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] }, 404, { code: 'model_not_found' }],
    ['prompt longer than the context', C, { model: id, prompt: 'the people of the union '.repeat(ctx) }, 400, { param: 'prompt', code: 'context_length_exceeded' }],
    ['token prompt longer than the context', C, { model: id, prompt: Array(ctx + 5).fill(1) }, 400, { param: 'prompt', code: 'context_length_exceeded' }],
    ['token id outside the vocabulary', C, { model: id, prompt: [1, 1e6] }, 400, { param: 'prompt' }],
    ['max_tokens = 0', C, { model: id, prompt: 'x', max_tokens: 0 }, 400, { param: 'max_tokens', code: 'invalid_value' }],
    ['max_tokens < 0', C, { model: id, prompt: 'x', max_tokens: -5 }, 400, { param: 'max_tokens', code: 'invalid_value' }],
    ['max_tokens huge', C, { model: id, prompt: 'x', max_tokens: 1e9 }, 400, { param: 'max_tokens', code: 'context_length_exceeded' }],
    ['max_tokens beyond int64', C, '{"model":"' + id + '","prompt":"x","max_tokens":99999999999999999999999}', 400, { param: 'max_tokens' }],
    ['prompt + max_tokens over the context', C, { model: id, prompt: 'The Congress', max_tokens: ctx }, 400, { param: 'max_tokens', code: 'context_length_exceeded' }],
    ['top_p out of range', C, { model: id, prompt: 'x', top_p: 3 }, 400, { param: 'top_p' }],
    ['n > 16', C, { model: id, prompt: 'x', n: 17 }, 400, { param: 'n', code: 'invalid_value' }],
    ['invalid UTF-8', C, Buffer.concat([Buffer.from(`{"model":"${id}","prompt":"bad `), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]), 400, { code: 'invalid_utf8' }],
    ['lone surrogate escape', C, `{"model":"${id}","prompt":"\\udc00"}`, 400, { code: 'invalid_json' }],
  ];
  for (const [what, route, payload, status, want] of cases) {
    const r = await rawPost(port, route, payload);
    const e = checkErrorObject(r, status, want, what);
    console.log(`${what}: ${status} ${e.type}/${e.code} param=${e.param}: ${e.message.slice(0, 90)}`);
  }
  // A number no type holds is refused naming its field.
  {
    const body = `{"model":"${id}","prompt":"x","temperature":1e309}`;
    const e = checkErrorObject(await rawPost(port, C, body), 400, { param: 'temperature', code: 'invalid_value' }, 'temperature 1e309');
    console.log(`temperature 1e309: 400 ${e.code} param=${e.param}: ${e.message}`);
  }
  // Bodies whose length the server cannot know are refused at once, not after
  // a read timeout: no Content-Length (411), one that is not a byte count (400).
  const body = JSON.stringify({ model: id, prompt: 'x', max_tokens: 2 });
  for (const [what, lenHeader, status, code] of [
    ['POST without Content-Length', '', 411, 'length_required'],
    ['Content-Length -1', 'Content-Length: -1\r\n', 400, 'invalid_content_length'],
    ['Content-Length 10^23', 'Content-Length: 100000000000000000000000\r\n', 400, 'invalid_content_length'],
    ['Content-Length not a number', 'Content-Length: 12abc\r\n', 400, 'invalid_content_length'],
  ]) {
    const t0 = Date.now();
    const r = await rawRequest(port, `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${lenHeader}\r\n`, body, { timeoutMs: 10000 });
    const e = checkErrorObject(r, status, { code }, what);
    check(r.headers.connection === 'close', `${what}: the connection is closed after the answer`);
    console.log(`${what}: ${status} ${e.code} in ${Date.now() - t0} ms: ${e.message}`);
  }
  // A request line or headers past the server's limit: 431 and the connection closed.
  for (const [what, head] of [
    ['request line over the limit', `GET /health?${'a'.repeat(16384)} HTTP/1.1\r\nHost: x\r\n\r\n`],
    ['headers over the limit', `GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(16384)}\r\n\r\n`],
  ]) {
    const r = await rawRequest(port, head, '', { timeoutMs: 10000 });
    const e = checkErrorObject(r, 431, { code: 'request_header_too_large' }, what);
    check(r.headers.connection === 'close', `${what}: the connection is closed after the answer`);
    console.log(`${what}: 431 ${e.code}: ${e.message}`);
  }
  // Without a seed each sampled request draws its own, and says which: sending
  // it back replays the answer.
  {
    const req = { model: id, prompt: 'The', max_tokens: 12, temperature: 1.5 };
    const a = JSON.parse((await rawPost(port, C, req)).body);
    const b = JSON.parse((await rawPost(port, C, req)).body);
    check(Number.isInteger(a.seed) && Number.isInteger(b.seed) && a.seed !== b.seed, `unseeded requests draw different seeds: ${a.seed}, ${b.seed}`);
    const again = JSON.parse((await rawPost(port, C, { ...req, seed: a.seed })).body);
    check(again.seed === a.seed && again.choices[0].text === a.choices[0].text, `the returned seed replays the answer: ${JSON.stringify(a.choices[0].text)} vs ${JSON.stringify(again.choices[0].text)}`);
    console.log(`unseeded: seeds ${a.seed} and ${b.seed}; replaying ${a.seed} gives the same text`);
  }
  checkErrorObject(await rawRequest(port, 'GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 404, { code: 'not_found' }, 'unknown route');
  checkErrorObject(await rawRequest(port, 'GET /v1/models/gpt-4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 404, { code: 'model_not_found' }, 'unknown model id');
  await stillServing('bad requests');

  // 100 MB bodies: refused with 413 while the server's memory stays flat.
  const rss0 = rssBytes(srv.proc.pid);
  const hundredMb = 100 * 2 ** 20;
  const block = Buffer.alloc(2 ** 20, 0x61);
  const sendBlocks = (chunked) => async (sock) => {
    for (let i = 0; i < 100 && !sock.destroyed; i++) {
      const data = chunked ? Buffer.concat([Buffer.from(`${block.length.toString(16)}\r\n`), block, Buffer.from('\r\n')]) : block;
      if (!sock.write(data)) {
        await new Promise((r) => {
          const go = () => { sock.off('drain', go); sock.off('close', go); r(); };
          sock.on('drain', go);
          sock.on('close', go);
        });
      }
    }
    if (chunked && !sock.destroyed) sock.write('0\r\n\r\n');
  };
  let r = await rawRequest(port,
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${hundredMb}\r\n\r\n`,
    sendBlocks(false), { timeoutMs: 60000 });
  checkErrorObject(r, 413, {}, '100 MB body with Content-Length');
  console.log(`100 MB body (Content-Length): ${r.status} ${JSON.parse(r.body).error.message}`);
  r = await rawRequest(port,
    'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
    sendBlocks(true), { timeoutMs: 60000 });
  checkErrorObject(r, 413, { code: 'request_too_large' }, '100 MB chunked body');
  console.log(`100 MB body (chunked): ${r.status} ${JSON.parse(r.body).error.message}`);
  // The rest of an oversized chunked body is never read as requests: a body
  // that carries request lines after the limit gets one answer, the 413.
  {
    const smuggled = Buffer.from('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(2 ** 12));
    const all = await new Promise((resolve, reject) => {
      const sock = net.connect(port, '127.0.0.1', () => {
        sock.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
        for (let i = 0; i < 16; i++) sock.write(Buffer.concat([Buffer.from(`${smuggled.length.toString(16)}\r\n`), smuggled, Buffer.from('\r\n')]));
        sock.write('0\r\n\r\n');
      });
      const got = [];
      sock.on('data', (d) => got.push(d));
      sock.on('error', () => {});
      sock.on('close', () => { clearTimeout(timer); resolve(Buffer.concat(got).toString('latin1')); });
      const timer = setTimeout(() => { sock.destroy(); reject(new Error('smuggling check: the server kept the connection open')); }, 20000);
    });
    const answers = all.split('HTTP/1.1 ').length - 1;
    check(answers === 1 && all.startsWith('HTTP/1.1 413'),
      `oversized chunked body with request lines inside: ${answers} answers, want one 413: ${all.slice(0, 300)}`);
    console.log('oversized chunked body carrying request lines: one answer, 413');
  }
  const rss1 = rssBytes(srv.proc.pid);
  console.log(`server RSS before ${(rss0 / 2 ** 20).toFixed(1)} MiB, after the 100 MB bodies ${(rss1 / 2 ** 20).toFixed(1)} MiB`);
  check(rss1 - rss0 < 32 * 2 ** 20, 'the 100 MB bodies were not held in memory');
  await stillServing('100 MB bodies');

  // Clients that hang up mid-stream: their requests are cancelled and the
  // slots freed (disconnect counter, nothing in flight, no active sequence).
  // Sixteen choices of ctx - 8 tokens keep the engine on each request long
  // after its first chunk: with one choice the tiny model could finish every
  // token before a client slowed by a busy machine hung up, leaving nothing
  // to cancel.
  const disconnectMidStream = () => new Promise((resolve, reject) => {
    const body = JSON.stringify({ model: id, prompt: 'The', max_tokens: ctx - 8, n: 16, stream: true, ignore_eos: true, temperature: 1 });
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    let got = '';
    sock.on('data', (d) => {
      got += d.toString();
      if (got.includes('data: {')) {
        sock.destroy(); // gone after the first chunk
        clearTimeout(timer);
        resolve(got);
      }
    });
    sock.on('error', reject);
    // Cleared once answered: a pending timer would hold node for 30 s after the test.
    const timer = setTimeout(() => reject(new Error('no first chunk in 30 s')), 30000);
  });
  const firsts = await Promise.all(Array.from({ length: 4 }, disconnectMidStream));
  check(firsts.every((g) => g.startsWith('HTTP/1.1 200')), 'streams started');
  let m = '';
  for (let i = 0; i < 100; i++) {
    m = await (await fetch(`${srv.base}/metrics`)).text();
    if (metricValue(m, 'keel_http_inflight_requests') === 0 && metricValue(m, 'keel_active_sequences') === 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  const disc = metricValue(m, 'keel_client_disconnects_total');
  const cancelled = metricValue(m, 'keel_generation_cancelled_total');
  console.log(`mid-stream disconnects: ${disc} seen, ${cancelled} cancelled, in flight ${metricValue(m, 'keel_http_inflight_requests')}, active ${metricValue(m, 'keel_active_sequences')}`);
  check(disc >= 1, 'a mid-stream disconnect was noticed');
  check(cancelled >= 1, 'and its request cancelled in the engine');
  check(metricValue(m, 'keel_http_inflight_requests') === 0, 'no request left in flight');
  check(metricValue(m, 'keel_active_sequences') === 0 && metricValue(m, 'keel_queue_length') === 0, 'slots freed');
  await stillServing('mid-stream disconnects');

  check(/keel_http_requests_total\{path="\/v1\/completions",code="413"\} 2/.test(m), "both oversized /v1/completions bodies counted as 413");
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('bad input: all checks passed');
