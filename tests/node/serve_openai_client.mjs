// OpenAI's own npm client (third_party/openai) against a running `keel serve`
// on loopback: model list, completions, chat, streaming of both, errors as
// the client's typed exceptions, then /metrics and a clean SIGTERM exit.
// Greedy text must equal `keel generate`'s (the same engine, alone in its
// batch); generate_vs_serve.mjs checks that path against the training model.
// Usage: node serve_openai_client.mjs <keel> <model dir> <openai package dir>
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { check, metricValue, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir] = process.argv.slice(2);
const { default: OpenAI } = await import(path.resolve(openaiDir, 'index.mjs'));

const srv = await startServer(keel, model, ['--backend', 'ref', '--threads', '1']);
let ok = false;
try {
  const client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: 'unused', maxRetries: 0 });

  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  console.log('models:', ids);
  check(ids.length === 1, 'one model listed');
  const id = ids[0];
  check(id === path.basename(model), `model id ${id} is the folder name`);

  // Greedy completion, checked against `keel generate`.
  const prompt = 'The Congress';
  const c = await client.completions.create({ model: id, prompt, max_tokens: 12, temperature: 0 });
  console.log('completion:', JSON.stringify(c));
  check(c.object === 'text_completion' && c.id.startsWith('cmpl-'), 'completion object/id');
  check(typeof c.choices[0].text === 'string', 'completion text');
  check(['length', 'stop'].includes(c.choices[0].finish_reason), 'finish_reason');
  check(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 12, 'completion_tokens in [1, 12]');
  check(c.usage.prompt_tokens >= 1, 'prompt_tokens');
  check(c.usage.total_tokens === c.usage.prompt_tokens + c.usage.completion_tokens, 'total_tokens');
  const gen = execFileSync(keel, ['generate', '--run', model, '--prompt', prompt, '--max-tokens', '12',
    '--temperature', '0', '--backend', 'ref'], { encoding: 'utf8' });
  const oracle = gen.slice(prompt.length, gen.length - 1);
  console.log('keel generate:', JSON.stringify(oracle));
  if (c.choices[0].finish_reason === 'length') {
    check(c.choices[0].text === oracle, `greedy text ${JSON.stringify(c.choices[0].text)} == keel generate ${JSON.stringify(oracle)}`);
  } else {
    check(oracle.startsWith(c.choices[0].text), 'greedy text (stopped early) is a prefix of keel generate');
  }

  // Streaming gives the same text, in several chunks, ending with a finish reason.
  const stream = await client.completions.create({ model: id, prompt, max_tokens: 12, temperature: 0, stream: true });
  let streamed = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    check(chunk.object === 'text_completion', 'chunk object');
    streamed += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    chunks++;
  }
  console.log(`streamed completion: ${chunks} chunks, ${JSON.stringify(streamed)}, finish ${finish}`);
  check(streamed === c.choices[0].text, 'streamed text == whole text');
  check(chunks >= 2 && finish === c.choices[0].finish_reason, 'several chunks and the same finish reason');

  // Sampling with a seed is reproducible.
  const s1 = await client.completions.create({ model: id, prompt: 'We', max_tokens: 10, temperature: 1, seed: 7 });
  const s2 = await client.completions.create({ model: id, prompt: 'We', max_tokens: 10, temperature: 1, seed: 7 });
  check(s1.choices[0].text === s2.choices[0].text, 'same seed, same text');

  // Chat, whole and streamed (with usage).
  const messages = [
    { role: 'system', content: 'You answer briefly.' },
    { role: 'user', content: 'What did the Congress do?' },
  ];
  const chat = await client.chat.completions.create({ model: id, messages, max_tokens: 10, temperature: 0 });
  console.log('chat:', JSON.stringify(chat));
  check(chat.object === 'chat.completion' && chat.id.startsWith('chatcmpl-'), 'chat object/id');
  check(chat.choices[0].message.role === 'assistant', 'assistant role');
  check(typeof chat.choices[0].message.content === 'string', 'chat content');
  check(chat.usage.completion_tokens >= 1 && chat.usage.completion_tokens <= 10, 'chat usage');
  const chatStream = await client.chat.completions.create({
    model: id, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let content = '';
  let role = null;
  let usage = null;
  let chatFinish = null;
  for await (const chunk of chatStream) {
    check(chunk.object === 'chat.completion.chunk', 'chat chunk object');
    if (chunk.usage) usage = chunk.usage;
    const ch = chunk.choices[0];
    if (!ch) continue;
    role = ch.delta.role ?? role;
    content += ch.delta.content ?? '';
    chatFinish = ch.finish_reason ?? chatFinish;
  }
  console.log(`streamed chat: ${JSON.stringify(content)}, finish ${chatFinish}, usage ${JSON.stringify(usage)}`);
  check(role === 'assistant', 'first delta carries the role');
  check(content === chat.choices[0].message.content, 'streamed chat == whole chat');
  check(chatFinish === chat.choices[0].finish_reason, 'chat finish reason');
  check(usage && usage.completion_tokens === chat.usage.completion_tokens &&
        usage.prompt_tokens === chat.usage.prompt_tokens, 'usage chunk matches');

  // Errors arrive as the client's typed exceptions with OpenAI's fields.
  try {
    await client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 2 });
    check(false, 'unknown model must fail');
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.status === 404, `unknown model: ${e}`);
    check(e.code === 'model_not_found' && e.param === 'model', `unknown model fields: ${e.code} ${e.param}`);
  }
  try {
    await client.completions.create({ model: id, prompt: 'x', max_tokens: 0 });
    check(false, 'max_tokens 0 must fail');
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'max_tokens', `max_tokens 0: ${e}`);
  }

  const health = await fetch(`${srv.base}/health`);
  check(health.status === 200, 'health 200');
  const metrics = await (await fetch(`${srv.base}/metrics`)).text();
  for (const t of ['keel_http_requests_total counter', 'keel_time_to_first_token_seconds histogram',
    'keel_inter_token_latency_seconds histogram', 'keel_queue_length gauge', 'keel_prompt_tokens_total counter',
    'keel_completion_tokens_total counter'])
    check(metrics.includes(`# TYPE ${t}`), `metrics has # TYPE ${t}`);
  check(metricValue(metrics, 'keel_generation_requests_total') === 6, 'six generation requests counted');
  check(metricValue(metrics, 'keel_time_to_first_token_seconds_count') === 6, 'six first tokens timed');
  check(metricValue(metrics, 'keel_completion_tokens_total') >= 6, 'completion tokens counted');
  check(metricValue(metrics, 'keel_queue_length') === 0, 'queue empty');
  check(/keel_http_requests_total\{path="\/v1\/completions",code="404"\} 1/.test(metrics), '404 counted by path/code');
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
console.log((await stopServer(srv)).trim().split('\n').slice(-1)[0]);
console.log('openai client: all checks passed');
// The client's kept-alive sockets would hold node for their 30 s timeout.
process.exit(0);
