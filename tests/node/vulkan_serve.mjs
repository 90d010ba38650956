// `keel serve --backend vulkan` and `keel generate --backend vulkan` on one
// model: weights, activations and the KV cache in the device's memory. The
// server answers over a real socket and gives the same text as generate for
// the same request and seed, greedy and sampled, f32 and q8_0; and greedy
// text on the device equals greedy text on the cpu backend (f32).
// With a third number, the host waits of one decode step (from `keel
// generate --stats` at two lengths) must be exactly it.
// Usage: node vulkan_serve.mjs <keel> <run dir> [max tokens (32)] [quant formats (none,q8_0)]
//        [host waits per decode step]
// (deepseek runs with fewer tokens: its context is short, and lavapipe is a CPU).
import fs from 'node:fs';
import path from 'node:path';
import { check, completeText, generateText, startServer, stopServer } from './serve_util.mjs';

const [keel, model, maxArg, quantArg, syncArg] = process.argv.slice(2);
const maxTokens = Number(maxArg ?? 32);
const quants = (quantArg ?? 'none,q8_0').split(',');
check(Number.isInteger(maxTokens) && maxTokens > 2, `max tokens: an integer > 2, got ${maxArg}`);
const prompt = 'The Congress of the United States';

const generate = (args) => generateText(keel, model, prompt, args).text;
const complete = (base, body) => completeText(base, model, prompt, body);

const cases = [
  { name: 'greedy', gen: ['--temperature', '0'], api: { temperature: 0 } },
  { name: 'seeded', gen: ['--temperature', '0.9', '--top-k', '40', '--seed', '7'],
    api: { temperature: 0.9, top_k: 40, seed: 7 } },
];

let ok = true;
for (const quant of quants) {
  const srv = await startServer(keel, model, ['--backend', 'vulkan', '--quant', quant]);
  try {
    for (const c of cases) {
      const g = generate(['--backend', 'vulkan', '--max-tokens', String(maxTokens), '--quant', quant, ...c.gen]);
      const s = await complete(srv.base, { max_tokens: maxTokens, ...c.api });
      console.log(`vulkan ${quant} ${c.name}: generate ${JSON.stringify(g)}`);
      console.log(`vulkan ${quant} ${c.name}: serve    ${JSON.stringify(s)}`);
      check(g === s && g.length > 0, `vulkan ${quant} ${c.name}: generate and serve give the same text`);
    }
  } catch (e) {
    ok = false;
    console.error(e.message);
  }
  await stopServer(srv);
}
check(ok, 'generate == serve on vulkan in every case');
const onCpu = generate(['--backend', 'cpu', '--max-tokens', String(maxTokens), '--temperature', '0']);
const onVk = generate(['--backend', 'vulkan', '--max-tokens', String(maxTokens), '--temperature', '0']);
console.log(`greedy f32: cpu ${JSON.stringify(onCpu)}`);
console.log(`greedy f32: vulkan ${JSON.stringify(onVk)}`);
check(onCpu === onVk && onCpu.length > 0, 'greedy f32 text on vulkan equals the cpu backend\'s');
// A bf16 KV cache on the device: q, k, v and the attention output rounded
// the same way as on the cpu backend.
const kv16 = (be) => generate(['--backend', be, '--max-tokens', String(maxTokens), '--temperature', '0', '--kv-dtype', 'bf16']);
// (deepseek's latent cache is f32 only: generate refuses bf16 for it.)
const arch = /^arch\s*=\s*"(\w+)"/m.exec(fs.readFileSync(path.join(model, 'config.toml'), 'utf8'))?.[1];
check(arch !== undefined, `model.arch in ${model}/config.toml`);
if (arch !== 'deepseek') {
  const [cpu16, vk16] = [kv16('cpu'), kv16('vulkan')];
  console.log(`greedy bf16 KV cache: cpu ${JSON.stringify(cpu16)}`);
  console.log(`greedy bf16 KV cache: vulkan ${JSON.stringify(vk16)}`);
  check(cpu16 === vk16 && cpu16.length > 0, 'greedy text with a bf16 KV cache on vulkan equals the cpu backend\'s');
}
if (syncArg !== undefined) {
  // The difference of two lengths leaves out loading and the prefill.
  const stats = (n) => {
    const r = generateText(keel, model, prompt, ['--backend', 'vulkan', '--max-tokens', String(n),
      '--temperature', '0', '--no-stop', '--stats']);
    const line = r.stderr.split('\n').find((l) => l.startsWith('keel generate: {'));
    check(line !== undefined, `--stats printed its line: ${JSON.stringify(r.stderr)}`);
    const st = JSON.parse(line.slice('keel generate: '.length));
    check(st.completion_tokens === n, `${n} tokens generated, got ${st.completion_tokens}`);
    return st;
  };
  const a = stats(2), b = stats(maxTokens);
  const steps = maxTokens - 2;
  const perStep = (k) => (b[k] - a[k]) / steps;
  console.log(`per decode step on vulkan: ${perStep('host_syncs')} host waits, ` +
    `${perStep('bytes_to_device')} bytes up, ${perStep('bytes_to_host')} bytes down`);
  check(perStep('host_syncs') === Number(syncArg),
    `${syncArg} host waits per decode step, got ${perStep('host_syncs')}`);
}
console.log('ok');
