// llama.cpp's side of `make bench-serve`: loads a GGUF through node-llama-cpp
// (installed by scripts/setup.sh into third_party/node-llama-cpp) on the CPU
// and measures what bench_serve measures for keel, the same way: prefill of
// a P-token prompt and time to first token (best of R), and greedy decode of
// `steps` tokens at batch 1 and at batch 8 after a 16-token prompt per
// sequence (best of R windows). Prints one JSON line.
// Usage: node scripts/bench_serve_llamacpp.js MODEL.gguf FORMAT [threads] [prompt] [steps] [reps]
'use strict';
const path = require('path');
const fs = require('fs');
const { pathToFileURL } = require('url');

async function main() {
  const [gguf, format, threadsArg, promptArg, stepsArg, repsArg] = process.argv.slice(2);
  if (!gguf || !format)
    throw new Error('usage: bench_serve_llamacpp.js MODEL.gguf FORMAT [threads] [prompt] [steps] [reps]');
  const threads = Number(threadsArg || 2), P = Number(promptArg || 128);
  const steps = Number(stepsArg || 32), R = Number(repsArg || 3);
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
  const prompt = Array.from({ length: P + 16 * B }, rand);
  const now = () => Number(process.hrtime.bigint()) / 1e9;

  // Evaluates `tokens` on seq and generates n tokens after the first one;
  // returns the start time and the time each generated token arrived.
  async function run(seq, tokens, n) {
    await seq.clearHistory();
    const t0 = now(), times = [];
    for await (const _ of seq.evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
      void _;
      times.push(now());
      if (times.length >= n + 1) break;
    }
    return { t0, times };
  }

  const seqs = Array.from({ length: B }, () => ctx.getSequence());
  let ttft = 1e30;
  for (let r = 0; r < R; ++r) {
    const { t0, times } = await run(seqs[0], prompt.slice(0, P), 0);
    ttft = Math.min(ttft, times[0] - t0);
  }
  // Batch 1: steps tokens after the first, best window.
  let d1 = 0;
  for (let r = 0; r < R; ++r) {
    const { times } = await run(seqs[0], prompt.slice(P, P + 16), steps);
    d1 = Math.max(d1, (times.length - 1) / (times[times.length - 1] - times[0]));
  }
  // Batch 8: the steady state, from the moment every sequence has its first
  // token to the moment the first one finishes, counting the tokens in it.
  let dB = 0;
  for (let r = 0; r < R; ++r) {
    const res = await Promise.all(seqs.map((q, b) => run(q, prompt.slice(P + 16 * b, P + 16 * b + 16), steps)));
    const start = Math.max(...res.map(x => x.times[0]));
    const end = Math.min(...res.map(x => x.times[x.times.length - 1]));
    const n = res.reduce((a, x) => a + x.times.filter(t => t > start && t <= end).length, 0);
    if (end > start) dB = Math.max(dB, n / (end - start));
  }
  console.log(JSON.stringify({
    bench: 'serve', engine: 'llama.cpp', format, threads, prompt: P, steps, reps: R,
    prefill_tok_s: P / ttft, ttft_ms: 1e3 * ttft,
    decode_b1_tok_s: d1, decode_b8_tok_s: dB,
  }));
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((e) => { console.error(`bench_serve_llamacpp: ${e.message}`); process.exit(1); });
