// `n` > 1 on `keel serve`: n choices sampled with seeds seed, seed + 1, ...;
// each equals the single request with that seed (so sharing the prompt's
// prefill changes nothing), usage adds the choices' tokens, the engine
// prefilled the prompt once (keel_prefills_shared_total grows by n - 1), and
// OpenAI's client reads the choices, streamed too (chunks carry each
// choice's index). n > 16 is a 400.
// Usage: node serve_n_choices.mjs <keel> <model dir> <openai package dir>
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, checkErrorObject, metricValue, rawPost, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir] = process.argv.slice(2);
const id = path.basename(model);
const srv = await startServer(keel, model, ['--max-batch', '8']);
let ok = false;
try {
  const C = '/v1/completions';
  const shared = async () => metricValue(await (await fetch(`${srv.base}/metrics`)).text(), 'keel_prefills_shared_total');
  const base = { model: id, prompt: 'The Congress of the United States', max_tokens: 12, temperature: 1.0, ignore_eos: true };
  const before = await shared();
  const r = await rawPost(srv.port, C, { ...base, n: 4, seed: 11 });
  check(r.status === 200, `n = 4: ${r.status} ${r.body}`);
  const j = JSON.parse(r.body);
  const after = await shared();
  check(j.choices.length === 4 && j.choices.every((c, i) => c.index === i), `4 choices indexed 0..3: ${JSON.stringify(j.choices.map((c) => c.index))}`);
  check(after - before === 3, `the prompt was prefilled once for 4 choices: shared prefills ${before} -> ${after}`);
  let tokens = 0;
  for (let i = 0; i < 4; i++) {
    const one = JSON.parse((await rawPost(srv.port, C, { ...base, seed: 11 + i })).body);
    check(one.choices[0].text === j.choices[i].text, `choice ${i} equals the single request with seed ${11 + i}: ${JSON.stringify(j.choices[i].text)} vs ${JSON.stringify(one.choices[0].text)}`);
    check(one.usage.prompt_tokens === j.usage.prompt_tokens, 'prompt tokens counted once');
    tokens += one.usage.completion_tokens;
  }
  check(j.usage.completion_tokens === tokens && j.usage.total_tokens === tokens + j.usage.prompt_tokens, `usage adds the choices: ${JSON.stringify(j.usage)}`);
  check(new Set(j.choices.map((c) => c.text)).size > 1, 'sampled choices differ');
  console.log(`n = 4, seed 11: ${j.choices.map((c) => JSON.stringify(c.text)).join(', ')}; usage ${JSON.stringify(j.usage)}; shared prefills +${after - before}`);
  const g = JSON.parse((await rawPost(srv.port, C, { ...base, temperature: 0, n: 3 })).body);
  check(g.choices.length === 3 && g.choices.every((c) => c.text === g.choices[0].text), 'greedy choices are equal');
  const { default: OpenAI } = await import(pathToFileURL(path.join(openaiDir, 'index.mjs')).href);
  const client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const c = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'Hello' }], n: 3, max_tokens: 6, seed: 5 });
  check(c.choices.length === 3 && c.choices.every((x, i) => x.index === i && x.message.role === 'assistant'), `chat n = 3 through the client: ${JSON.stringify(c.choices)}`);
  console.log(`chat n = 3: ${c.choices.map((x) => JSON.stringify(x.message.content)).join(', ')}`);
  // Streamed, the choices' chunks interleave, each with its index; every
  // choice's text equals the whole response's, and usage adds them.
  for (const [what, create, pieceOf] of [
    ['completions', (b) => client.completions.create(b), (c) => c.text ?? ''],
    ['chat', (b) => client.chat.completions.create({ ...b, prompt: undefined, max_tokens: 6, messages: [{ role: 'user', content: 'Hello' }] }), (c) => c.delta?.content ?? ''],
  ]) {
    const body = { model: id, prompt: base.prompt, max_tokens: 12, temperature: 1.0, seed: 11, n: 3 };
    const whole = await create(body);
    const s = await create({ ...body, stream: true, stream_options: { include_usage: true } });
    const texts = ['', '', ''];
    const finishes = [null, null, null];
    const roles = [0, 0, 0];
    let usage = null;
    for await (const chunk of s) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        check(c.index >= 0 && c.index < 3, `${what}: chunk index ${c.index}`);
        texts[c.index] += pieceOf(c);
        if (c.delta?.role === 'assistant') roles[c.index]++;
        if (c.finish_reason) finishes[c.index] = c.finish_reason;
      }
    }
    const wholeTexts = whole.choices.map((c) => c.text ?? c.message.content);
    check(JSON.stringify(texts) === JSON.stringify(wholeTexts), `${what}: streamed n = 3 equals whole: ${JSON.stringify(texts)} vs ${JSON.stringify(wholeTexts)}`);
    check(finishes.every((f) => f === 'length' || f === 'stop'), `${what}: each choice finished: ${JSON.stringify(finishes)}`);
    if (what === 'chat') check(roles.every((r) => r === 1), `chat: one role delta per choice: ${JSON.stringify(roles)}`);
    check(usage && usage.completion_tokens === whole.usage.completion_tokens && usage.prompt_tokens === whole.usage.prompt_tokens, `${what}: streamed usage adds the choices: ${JSON.stringify(usage)} vs ${JSON.stringify(whole.usage)}`);
    console.log(`${what} n = 3 streamed: ${texts.map((t) => JSON.stringify(t)).join(', ')}`);
  }
  checkErrorObject(await rawPost(srv.port, C, { ...base, n: 17 }), 400, { param: 'n', code: 'invalid_value' }, 'n = 17');
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('n choices: all checks passed');
// The client's kept-alive sockets would hold node for another 30 s.
process.exit(0);
