// llama.cpp's Vulkan build (node-llama-cpp's prebuilt @node-llama-cpp/linux-x64-vulkan)
// as the decode peer of `make bench-vulkan`: loads a GGUF with every layer on
// the Vulkan device and measures greedy batch-1 decode the way
// bench_vulkan_model.py measures keel (tokens after the first, best of R).
// Prints one JSON line; exits 0 with {"skipped": ...} when no Vulkan build loads.
// Usage: node scripts/bench_vulkan_llamacpp.js MODEL.gguf [steps] [reps]
'use strict';
const path = require('path');
const fs = require('fs');
const { pathToFileURL } = require('url');

async function main() {
  const [gguf, stepsArg, repsArg] = process.argv.slice(2);
  if (!gguf) throw new Error('usage: bench_vulkan_llamacpp.js MODEL.gguf [steps] [reps]');
  const steps = Number(stepsArg || 64), R = Number(repsArg || 3);
  const root = process.env.KEEL_NODE_LLAMA_CPP ||
      path.join(__dirname, '..', 'third_party', 'node-llama-cpp', 'node_modules', 'node-llama-cpp');
  const entry = path.join(root, 'dist', 'index.js');
  if (!fs.existsSync(entry)) throw new Error(`node-llama-cpp not found at ${root} (run scripts/setup.sh)`);
  // llama.cpp's Vulkan backend skips CPU devices (lavapipe) unless they are
  // named; name the device keel uses.
  if (process.env.GGML_VK_VISIBLE_DEVICES === undefined)
    process.env.GGML_VK_VISIBLE_DEVICES = /^[0-9]+$/.test(process.env.KEEL_VULKAN_DEVICE || '')
      ? process.env.KEEL_VULKAN_DEVICE : '0';
  const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
  let llama;
  try {
    llama = await getLlama({ gpu: 'vulkan', build: 'never', logLevel: LlamaLogLevel.error });
  } catch (e) {
    console.log(JSON.stringify({ bench: 'vulkan_model', engine: 'llama.cpp', skipped: e.message }));
    return;
  }
  const devices = await llama.getGpuDeviceNames();
  if (devices.length === 0) {
    console.log(JSON.stringify({ bench: 'vulkan_model', engine: 'llama.cpp',
                                 skipped: 'its Vulkan build found no device (it would run on the CPU)' }));
    await llama.dispose();
    return;
  }
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 'max' });
  const ctx = await model.createContext({ contextSize: Math.min(256, model.trainContextSize),
                                          batchSize: 64, sequences: 1 });
  const seq = ctx.getSequence();
  const now = () => Number(process.hrtime.bigint()) / 1e9;
  const prompt = [11, 62, 78, 86, 57];  // ids every vocabulary of the bench has
  let best = 0;
  for (let r = 0; r < R; ++r) {
    await seq.clearHistory();
    const times = [];
    for await (const _ of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      void _;
      times.push(now());
      if (times.length >= steps + 1) break;
    }
    if (times.length > 1)
      best = Math.max(best, (times.length - 1) / (times[times.length - 1] - times[0]));
  }
  console.log(JSON.stringify({ bench: 'vulkan_model', engine: 'llama.cpp', backend: llama.gpu,
                               devices, decode_b1_tok_s: best, steps, reps: R }));
  await ctx.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((e) => { console.error(`bench_vulkan_llamacpp: ${e.message}`); process.exit(1); });
