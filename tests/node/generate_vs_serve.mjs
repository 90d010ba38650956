// `keel generate` and `keel serve` are one inference path: for the same
// prompt, sampling settings and seed they must produce the same text, greedy
// and sampled, with and without quantized weights. Independently of that
// path, every greedy token must be the argmax of the *training* model's
// logits (`--logits-out`: one full forward pass, no KV cache, no inference
// code). generate's stdout holds exactly the prompt and the continuation;
// whatever it logs goes to stderr.
// Usage: node generate_vs_serve.mjs <keel> <run dir>
import fs from 'node:fs';
import path from 'node:path';
import { check, completeText, generateText, startServer, stopServer } from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const prompt = 'The Congress of the United States';

const generate = (args) => generateText(keel, model, prompt, args);
const complete = (base, body) => completeText(base, model, prompt, body);

const cases = [
  { name: 'greedy', gen: ['--temperature', '0'], api: { temperature: 0 } },
  {
    name: 'seeded',
    gen: ['--temperature', '0.9', '--top-k', '40', '--top-p', '0.95', '--repetition-penalty', '1.1',
      '--seed', '7'],
    api: { temperature: 0.9, top_k: 40, top_p: 0.95, repetition_penalty: 1.1, seed: 7 },
  },
  { name: 'seeded-2', gen: ['--temperature', '1.2', '--seed', '12345'], api: { temperature: 1.2, seed: 12345 } },
  {
    name: 'penalties',
    gen: ['--temperature', '0.8', '--presence-penalty', '0.6', '--frequency-penalty', '1.1', '--seed', '5'],
    api: { temperature: 0.8, presence_penalty: 0.6, frequency_penalty: 1.1, seed: 5 },
  },
];

let ok = true;
for (const quant of ['none', 'q8_0']) {
  const srv = await startServer(keel, model, ['--quant', quant, '--threads', '1']);
  try {
    for (const c of cases) {
      const g = generate(['--max-tokens', '40', '--quant', quant, '--threads', '1', ...c.gen]);
      const s = await complete(srv.base, { max_tokens: 40, ...c.api });
      console.log(`${quant} ${c.name}: generate ${JSON.stringify(g.text)}`);
      console.log(`${quant} ${c.name}: serve    ${JSON.stringify(s)}`);
      check(g.text === s, `${quant} ${c.name}: generate and serve give the same text`);
      check(g.text.length > 0, `${quant} ${c.name}: some text was generated`);
    }
  } catch (e) {
    ok = false;
    console.error(e.message);
  }
  await stopServer(srv);
}
check(ok, 'generate == serve in every case');

// The independent oracle: the training model's argmax at every position.
const out = path.join(path.dirname(model), `generate_logits_${process.pid}.json`);
const g = generate(['--temperature', '0', '--no-stop', '--max-tokens', '24', '--stats',
  '--logits-out', out]);
const j = JSON.parse(fs.readFileSync(out, 'utf8'));
fs.rmSync(out);
check(j.ids.length === 24 && j.logits.length === 24, `24 ids and 24 logit rows (${j.ids.length})`);
let agree = 0;
for (let k = 0; k < j.ids.length; k++) {
  const row = j.logits[k];
  let best = 0;
  for (let v = 1; v < row.length; v++) if (row[v] > row[best]) best = v;
  // A near tie may flip between two correct forwards: accept a choice within 1e-4 of the max.
  if (best === j.ids[k] || row[best] - row[j.ids[k]] <= 1e-4) agree++;
  else console.error(`position ${k}: engine chose ${j.ids[k]}, training model's argmax is ${best}`);
}
console.log(`greedy ids that are the training model's argmax: ${agree}/${j.ids.length}`);
check(agree === j.ids.length, 'every greedy id is the training model argmax');
// --stats goes to stderr as one JSON line; stdout held only the text (checked in generate()).
const stats = g.stderr.split('\n').find((l) => l.startsWith('keel generate: {'));
check(stats !== undefined, `--stats printed its line on stderr: ${JSON.stringify(g.stderr)}`);
const st = JSON.parse(stats.slice('keel generate: '.length));
console.log('stats:', JSON.stringify(st));
check(st.completion_tokens === 24 && st.decode_tok_s > 0, 'stats count 24 tokens at a positive rate');
console.log('ok');
// The client's kept-alive sockets would hold node for their 30 s timeout.
process.exit(0);
