// Log-probabilities from `keel serve` (completions `logprobs`, chat
// `logprobs`/`top_logprobs`, streamed and whole) against an independent
// oracle: `keel generate --logits-out` scores the same greedy ids with one
// forward pass of the *training* model (no KV cache, no inference code), and
// the log-softmax of its rows is computed here in float64. Every reported
// logprob and top alternative must match it within 1e-3.
// Usage: node serve_logprobs.mjs <keel> <run dir> <openai package dir>
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, checkErrorObject, rawPost, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir] = process.argv.slice(2);
const id = path.basename(model);
const prompt = 'The Congress of the United States';
const N = 16;
// Both sides are f32 forward passes that sum in different orders (measured
// ~4e-7 here); 1e-3 leaves room for any CPU's kernels and still catches a
// wrong normalisation or an off-by-one row.
const TOL = 1e-3;

// The oracle: ids and training-model logits, then log-softmax per row.
const out = path.join(path.dirname(model), `logprobs_oracle_${process.pid}.json`);
const g = spawnSync(keel, ['generate', '--run', model, '--prompt', prompt, '--temperature', '0',
  '--no-stop', '--max-tokens', String(N), '--logits-out', out], { encoding: 'utf8' });
check(g.status === 0, `keel generate --logits-out exited ${g.status}: ${g.stderr}`);
const oracle = JSON.parse(fs.readFileSync(out, 'utf8'));
fs.rmSync(out);
const logSoftmax = (row) => {
  const mx = Math.max(...row);
  const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
  return row.map((v) => v - lse);
};
const lsm = oracle.logits.map(logSoftmax);
const topOf = (row, k) => row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map((x) => x[0]);

// Without the prefix cache: the streamed request repeats the whole one, and a
// cache hit would prefill only its last token, as a shorter batch whose GEMM
// may round the logits' last bits differently (the same tokens; logprobs
// within 1e-4: tests/serve/test_prefix_cache.cpp), where this test compares
// the two responses' numbers exactly.
const srv = await startServer(keel, model, ['--threads', '1', '--prefix-cache-mb', '0']);
let ok = false;
try {
  const C = '/v1/completions';
  const req = { model: id, prompt, max_tokens: N, temperature: 0, ignore_eos: true, logprobs: 3 };
  const r = await rawPost(srv.port, C, req);
  check(r.status === 200, `completion with logprobs: ${r.status} ${r.body}`);
  const lp = JSON.parse(r.body).choices[0].logprobs;
  check(lp && lp.tokens.length === N && lp.token_logprobs.length === N && lp.top_logprobs.length === N &&
    lp.text_offset.length === N, `completions logprobs has ${N} entries of each list: ${JSON.stringify(lp).slice(0, 300)}`);
  let worst = 0;
  for (let k = 0; k < N; k++) {
    const want = lsm[k][oracle.ids[k]];
    worst = Math.max(worst, Math.abs(lp.token_logprobs[k] - want));
    check(Math.abs(lp.token_logprobs[k] - want) <= TOL, `token ${k}: logprob ${lp.token_logprobs[k]} vs oracle ${want}`);
    const alts = Object.values(lp.top_logprobs[k]).sort((a, b) => b - a);
    const wantTop = topOf(lsm[k], 3);
    check(alts.length >= 1 && alts.length <= 3, `token ${k}: ${alts.length} alternatives`);
    for (let i = 0; i < alts.length; i++) {
      worst = Math.max(worst, Math.abs(alts[i] - wantTop[i]));
      check(Math.abs(alts[i] - wantTop[i]) <= TOL, `token ${k}: alternative ${i} ${alts[i]} vs oracle ${wantTop[i]}`);
    }
    // Greedy: the chosen token is the most likely one.
    check(Math.abs(lp.token_logprobs[k] - alts[0]) <= 1e-6, `token ${k}: greedy pick is the top alternative`);
    // Offsets count each token's bytes from the completion's start.
    check(k === 0 ? lp.text_offset[0] === 0 : lp.text_offset[k] > lp.text_offset[k - 1], `text_offset: ${lp.text_offset}`);
  }
  console.log(`completions: ${N} logprobs and top-3 alternatives within ${worst.toExponential(2)} of the training model's log-softmax`);

  // Streamed: the chunks carry the same logprobs, offsets continuing.
  const s = await fetch(`${srv.base}${C}`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...req, stream: true }) });
  const events = (await s.text()).split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
  const streamed = events.flatMap((e) => (e.choices[0] && e.choices[0].logprobs ? e.choices[0].logprobs.token_logprobs : []));
  const offsets = events.flatMap((e) => (e.choices[0] && e.choices[0].logprobs ? e.choices[0].logprobs.text_offset : []));
  check(JSON.stringify(streamed) === JSON.stringify(lp.token_logprobs), `streamed logprobs equal the whole response's: ${streamed.length}`);
  check(JSON.stringify(offsets) === JSON.stringify(lp.text_offset), `streamed text_offset equals the whole response's`);
  console.log(`stream: ${streamed.length} logprobs in ${events.length} chunks, same values and offsets`);

  // Chat through OpenAI's client: logprobs.content with top_logprobs.
  const { default: OpenAI } = await import(pathToFileURL(path.join(openaiDir, 'index.mjs')).href);
  const client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const c = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true });
  const content = c.choices[0].logprobs.content;
  check(content.length === c.usage.completion_tokens, `chat: ${content.length} logprob entries for ${c.usage.completion_tokens} tokens`);
  for (const t of content) {
    check(typeof t.token === 'string' && t.logprob <= 0 && Array.isArray(t.bytes) && t.top_logprobs.length === 2,
      `chat entry shape: ${JSON.stringify(t)}`);
    check(Math.abs(t.top_logprobs[0].logprob - t.logprob) <= 1e-6 && t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob,
      `chat greedy entry is the top alternative, descending: ${JSON.stringify(t)}`);
  }
  console.log(`chat: ${content.length} entries with token, logprob, bytes and 2 alternatives`);

  // Out of range and inconsistent requests.
  checkErrorObject(await rawPost(srv.port, C, { model: id, prompt, logprobs: 6 }), 400, { param: 'logprobs', code: 'invalid_value' }, 'logprobs 6');
  checkErrorObject(await rawPost(srv.port, '/v1/chat/completions', { model: id, messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }),
    400, { param: 'top_logprobs', code: 'invalid_value' }, 'top_logprobs without logprobs');
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('logprobs: all checks passed');
// The client's kept-alive sockets would hold node for another 30 s.
process.exit(0);
