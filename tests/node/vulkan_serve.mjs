// `keel serve --backend vulkan` and `keel generate --backend vulkan` on one
// model: weights, activations and the KV cache in the device's memory. The
// server answers over a real socket and gives the same text as generate for
// the same request and seed, greedy and sampled, f32 and q8_0; and greedy
// text on the device equals greedy text on the cpu backend (f32).
// Usage: node vulkan_serve.mjs <keel> <run dir>
import { check, completeText, generateText, startServer, stopServer } from './serve_util.mjs';

const [keel, model] = process.argv.slice(2);
const prompt = 'The Congress of the United States';

const generate = (args) => generateText(keel, model, prompt, args).text;
const complete = (base, body) => completeText(base, model, prompt, body);

const cases = [
  { name: 'greedy', gen: ['--temperature', '0'], api: { temperature: 0 } },
  { name: 'seeded', gen: ['--temperature', '0.9', '--top-k', '40', '--seed', '7'],
    api: { temperature: 0.9, top_k: 40, seed: 7 } },
];

let ok = true;
for (const quant of ['none', 'q8_0']) {
  const srv = await startServer(keel, model, ['--backend', 'vulkan', '--quant', quant]);
  try {
    for (const c of cases) {
      const g = generate(['--backend', 'vulkan', '--max-tokens', '32', '--quant', quant, ...c.gen]);
      const s = await complete(srv.base, { max_tokens: 32, ...c.api });
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
const onCpu = generate(['--backend', 'cpu', '--max-tokens', '32', '--temperature', '0']);
const onVk = generate(['--backend', 'vulkan', '--max-tokens', '32', '--temperature', '0']);
console.log(`greedy f32: cpu ${JSON.stringify(onCpu)}`);
console.log(`greedy f32: vulkan ${JSON.stringify(onVk)}`);
check(onCpu === onVk, 'greedy f32 text on vulkan equals the cpu backend\'s');
console.log('ok');
