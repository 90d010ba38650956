// llama.cpp's side of `make bench-serve`: loads a GGUF through node-llama-cpp
// (installed by scripts/setup.sh into third_party/node-llama-cpp) on the CPU
// and measures what bench_serve measures for keel, the same way: prefill of
// a 128-token prompt (time to first token), greedy decode at batch 1 and at
// batch 8. Prints one JSON line.
// Usage: node scripts/bench_serve_llamacpp.js MODEL.gguf FORMAT [threads] [prompt] [steps]
'use strict';
const path = require('path');
const fs = require('fs');
const { pathToFileURL } = require('url');

async function main() {
  const [gguf, format, threadsArg, promptArg, stepsArg] = process.argv.slice(2);
  if (!gguf || !format) throw new Error('usage: bench_serve_llamacpp.js MODEL.gguf FORMAT [threads]');
  const threads = Number(threadsArg || 2), P = Number(promptArg || 128), steps = Number(stepsArg || 64);
  const B = 8;
  const root = process.env.KEEL_NODE_LLAMA_CPP ||
      path.join(__dirname, '..', 'third_party', 'node-llama-cpp', 'node_modules', 'node-llama-cpp');
  const entry = path.join(root, 'dist', 'index.js');
  if (!fs.existsSync(entry)) throw new Error(`node-llama-cpp not found at ${root} (run scripts/setup.sh)`);
  const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: threads,
                                 logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: 1024, batchSize: 512, sequences: B,
                                          threads: { ideal: threads, min: threads } });
  // The same kind of prompt as bench_serve: pseudo-random ids (fixed LCG).
  let s = 12345;
  const rand = () => { s = (s * 1103515245 + 12345) % 2147483648; return s % 50000; };
  const prompt = Array.from({ length: P }, rand);
  const now = () => Number(process.hrtime.bigint()) / 1e9;

  // Generates n tokens on seq after `tokens`; returns [seconds to the first, seconds for the rest].
  async function run(seq, tokens, n) {
    await seq.clearHistory();
    const t0 = now();
    let first = 0, count = 0;
    for await (const _ of seq.evaluate(tokens, { temperature: 0 })) {
      void _;
      if (++count === 1) first = now();
      if (count >= n + 1) break;
    }
    return [first - t0, now() - first, count - 1];
  }

  const seqs = Array.from({ length: B }, () => ctx.getSequence());
  let ttft = 1e30;
  for (let r = 0; r < 3; ++r) ttft = Math.min(ttft, (await run(seqs[0], prompt, 0))[0]);
  const [, d1s, d1n] = await run(seqs[0], prompt.slice(0, 16), steps);
  const t0 = now();
  const res = await Promise.all(seqs.map((q, b) => run(q, prompt.slice(b, b + 16), steps)));
  // Batch-8 rate over the decode phase: all tokens after each first one.
  const dBn = res.reduce((a, r) => a + r[2], 0);
  const dBs = now() - t0 - Math.min(...res.map(r => r[0]));
  console.log(JSON.stringify({
    bench: 'serve', engine: 'llama.cpp', format, threads,
    prefill_tok_s: P / ttft, ttft_ms: 1e3 * ttft,
    decode_b1_tok_s: d1n / d1s, decode_b8_tok_s: dBn / dBs,
  }));
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((e) => { console.error(`bench_serve_llamacpp: ${e.message}`); process.exit(1); });
