// Automatic prefix caching on `keel serve`, through OpenAI's npm client: a
// second request sharing a long prefix with a finished one reports
// usage.prompt_tokens_details.cached_tokens > 0 (completions and chat, whole
// and streamed with include_usage), gives the same greedy text as a server
// started with --prefix-cache-mb 0 (which reports 0 cached tokens), and the
// cache's Prometheus counters moved by what the responses reported.
// Usage: node serve_prefix_cache.mjs <keel> <model dir> <openai package dir> [server args...]
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, metricValue, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir, ...serverArgs] = process.argv.slice(2);
const id = path.basename(model);
const { default: OpenAI } = await import(pathToFileURL(path.join(openaiDir, 'index.mjs')).href);
const on = await startServer(keel, model, ['--threads', '1', ...serverArgs]);
const off = await startServer(keel, model, ['--threads', '1', '--prefix-cache-mb', '0', ...serverArgs]);
let ok = false;
try {
  const clientOn = new OpenAI({ baseURL: `${on.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const clientOff = new OpenAI({ baseURL: `${off.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const metrics = async () => {
    const t = await (await fetch(`${on.base}/metrics`)).text();
    return { hits: metricValue(t, 'keel_prefix_cache_hits_total'), reused: metricValue(t, 'keel_prefix_cache_tokens_reused_total'), limit: metricValue(t, 'keel_prefix_cache_bytes_limit') };
  };
  const m0 = await metrics();
  check(m0.hits === 0 && m0.reused === 0 && m0.limit > 0, `fresh counters: ${JSON.stringify(m0)}`);
  // A long shared start (the model's context is 128 tokens).
  const prefix = 'Fellow-Citizens of the Senate and of the House of Representatives: the Congress of the United States';
  const opts = { model: id, max_tokens: 10, temperature: 0 };
  const first = await clientOn.completions.create({ ...opts, prompt: `${prefix} shall` });
  check(first.usage.prompt_tokens_details.cached_tokens === 0, `a cold cache: ${JSON.stringify(first.usage)}`);
  const second = { ...opts, prompt: `${prefix} will now` };
  const hit = await clientOn.completions.create(second);
  const cold = await clientOff.completions.create(second);
  const cached = hit.usage.prompt_tokens_details.cached_tokens;
  check(cached > 10 && cached < hit.usage.prompt_tokens, `a hit on the shared prefix: ${JSON.stringify(hit.usage)}`);
  check(cold.usage.prompt_tokens_details.cached_tokens === 0, `the cache-off server: ${JSON.stringify(cold.usage)}`);
  check(hit.choices[0].text === cold.choices[0].text, `same greedy text with and without the cache: ${JSON.stringify(hit.choices[0].text)} vs ${JSON.stringify(cold.choices[0].text)}`);
  check(hit.usage.prompt_tokens === cold.usage.prompt_tokens, 'same prompt tokens');
  console.log(`completions: ${cached} of ${hit.usage.prompt_tokens} prompt tokens cached; text ${JSON.stringify(hit.choices[0].text)}`);

  // Chat: a conversation one turn longer reuses the earlier turn's rows.
  const system = { role: 'system', content: 'You answer questions about the Congress.' };
  const turn1 = [system, { role: 'user', content: 'What did they say?' }];
  const a1 = await clientOn.chat.completions.create({ ...opts, messages: turn1 });
  const turn2 = [...turn1, { role: 'assistant', content: a1.choices[0].message.content }, { role: 'user', content: 'Then?' }];
  const streamed = async (client) => {
    const s = await client.chat.completions.create({ ...opts, messages: turn2, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage = null;
    for await (const chunk of s) {
      if (chunk.choices.length) text += chunk.choices[0].delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    return { text, usage };
  };
  const h2 = await streamed(clientOn);
  const c2 = await streamed(clientOff);
  check(h2.usage.prompt_tokens_details.cached_tokens > 10, `chat turn 2 hits the cache: ${JSON.stringify(h2.usage)}`);
  check(c2.usage.prompt_tokens_details.cached_tokens === 0, `chat, cache off: ${JSON.stringify(c2.usage)}`);
  check(h2.text === c2.text, `chat: same text: ${JSON.stringify(h2.text)} vs ${JSON.stringify(c2.text)}`);
  console.log(`chat turn 2 (streamed): ${h2.usage.prompt_tokens_details.cached_tokens} of ${h2.usage.prompt_tokens} cached`);

  const m1 = await metrics();
  // Hits so far: the completion, chat turn 1 (shares nothing long: maybe
  // not), chat turn 2. The counters move by what the responses reported.
  check(m1.hits >= 2, `hits counted: ${JSON.stringify(m1)}`);
  check(m1.reused >= cached + h2.usage.prompt_tokens_details.cached_tokens, `reused tokens counted: ${JSON.stringify(m1)}`);
  const offMetrics = await (await fetch(`${off.base}/metrics`)).text();
  check(metricValue(offMetrics, 'keel_prefix_cache_hits_total') === 0 && metricValue(offMetrics, 'keel_prefix_cache_bytes_limit') === 0, 'the cache-off server never hits');
  ok = true;
} finally {
  if (!ok) {
    on.proc.kill('SIGKILL');
    off.proc.kill('SIGKILL');
  }
}
await stopServer(on);
await stopServer(off);
console.log('prefix cache: all checks passed');
// The client's kept-alive sockets would hold node for another 30 s.
process.exit(0);
