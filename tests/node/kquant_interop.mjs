// k-quant exports in llama.cpp (node-llama-cpp's prebuilt CPU binaries):
// train a tiny llama of width 256 (so rows hold whole 256-element
// super-blocks), export it as f32, q8_0, q4_0, q4_k_m, q5_k_m and q6_k, and
// check for each file that (1) the tensor types are llama.cpp's preset mix
// as node-llama-cpp's own GGUF reader sees them, (2) llama.cpp's next-token
// log-probabilities agree with keel's on the same file (`keel generate
// --model file.gguf`, keel dequantizing to f32), and (3) llama.cpp's
// perplexity on held-out SOTU text is within a stated delta of the f32
// file's. The q4_k_m file is the round trip: keel writes it, llama.cpp runs
// it, keel reads it back and continues the prompt as llama.cpp does.
// Usage: node kquant_interop.mjs <keel> <work dir> <node-llama-cpp dir> <corpus dir> <held-out text>
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [keel, work, nlcDir, corpus, heldOut] = process.argv.slice(2);
if (!keel || !work || !nlcDir || !corpus || !heldOut) {
  console.error('usage: node kquant_interop.mjs <keel> <work dir> <node-llama-cpp dir> <corpus dir> <held-out text>');
  process.exit(2);
}
const entry = path.join(nlcDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');
if (!fs.existsSync(entry)) {
  console.error(`missing ${entry}: run scripts/setup.sh to install node-llama-cpp`);
  process.exit(1);
}

// Bounds (the run prints its figures; docs/export.md lists them).
// Same file, keel (f32 compute on the dequantized weights) vs llama.cpp
// (which quantizes activations to 8 bits for its quantized matmuls): |delta
// log p| of keel's greedy tokens below 0.1 and top-1 agreement >= 90%, as for
// the q8_0 files of llama_interop.mjs. A wrongly decoded block moves these by
// whole nats; an activation rounding by hundredths.
const SAME_FILE_CHOSEN_BOUND = 0.1;
const TOP1_MIN = 0.9;
// Perplexity of each export relative to the f32 file's, all in llama.cpp.
// Measured +0.06% (q8_0), -0.01% (q6_k), +0.14% (q5_k_m), +0.07% (q4_k_m),
// +0.13% (q4_0): a small model's perplexity barely moves, so the bounds are
// loose and the ordering is checked on per-token drift below instead.
const PPL_REL_BOUND = { q8_0: 0.005, q6_k: 0.005, q5_k_m: 0.01, q4_k_m: 0.02, q4_0: 0.03 };

function run(args) {
  return execFileSync(keel, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

const runDir = path.join(work, 'run_kquant');
fs.rmSync(runDir, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
const t0 = Date.now();
run(['train', '--no-resume', 'resilience.loss_spike=false', 'model.arch=llama', 'model.n_kv_head=2',
  'model.n_layer=2', 'model.n_head=4', 'model.n_embd=256', 'model.max_seq_len=128', 'train.seq_len=64',
  'train.batch_size=8', 'train.steps=200', 'train.warmup_steps=10', 'train.lr=3e-3',
  'train.eval_every=1000', 'train.eval_batches=1', 'train.peak_gflops=100', `data.corpus=${corpus}`,
  'data.vocab_size=384', 'data.val_fraction=0.1', `data.cache_dir=${path.join(work, 'cache')}`,
  `run.dir=${runDir}`]);
console.log(`trained a tiny llama (width 256) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

const { getLlama, readGgufFileInfo, LlamaLogLevel } = await import(pathToFileURL(entry).href);
const release = JSON.parse(fs.readFileSync(
  path.join(nlcDir, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;
const llama = await getLlama({
  gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false,
  logLevel: LlamaLogLevel.error, maxThreads: 2,
  logger: (level, message) => console.error(`[llama.cpp] ${message}`),
});
console.log(`node-llama-cpp ${release}, llama.cpp ${llama.llamaCppRelease?.release ?? '?'}`);

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}
function logSoftmax(row) {
  let m = -Infinity;
  for (const x of row) m = Math.max(m, x);
  let s = 0;
  for (const x of row) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return row.map((x) => x - lse);
}

// ggml type numbers and llama.cpp's file types; the mix of the two-layer,
// width-256 llama (ffn 704: not a multiple of 256, so ffn_down falls back).
const T = { F32: 0, Q4_0: 2, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14 };
const MIX = {
  q4_k_m: { fileType: 15, types: { 'token_embd.weight': T.Q4_K, 'output.weight': T.Q6_K,
    'blk.0.attn_q.weight': T.Q4_K, 'blk.0.attn_v.weight': T.Q4_K, 'blk.1.attn_v.weight': T.Q6_K,
    'blk.0.ffn_gate.weight': T.Q4_K, 'blk.0.ffn_down.weight': T.Q5_0, 'blk.1.ffn_down.weight': T.Q8_0,
    'blk.0.attn_norm.weight': T.F32 } },
  q5_k_m: { fileType: 17, types: { 'token_embd.weight': T.Q5_K, 'output.weight': T.Q6_K,
    'blk.0.attn_v.weight': T.Q5_K, 'blk.1.attn_v.weight': T.Q6_K, 'blk.0.ffn_down.weight': T.Q5_1,
    'blk.1.ffn_down.weight': T.Q8_0 } },
  q6_k: { fileType: 18, types: { 'token_embd.weight': T.Q6_K, 'blk.0.attn_v.weight': T.Q6_K,
    'blk.0.ffn_down.weight': T.Q8_0, 'output_norm.weight': T.F32 } },
};

const prompt = 'The Congress of the United States';
const maxTokens = 40;
const held = fs.readFileSync(heldOut, 'utf8');

async function evaluate(dtype) {
  const gguf = path.join(runDir, `model-${dtype}.gguf`);
  run(['export', '--run', runDir, '--format', 'gguf', '--dtype', dtype, '--out', gguf]);
  const info = await readGgufFileInfo(gguf, { readTensorInfo: true });
  if (MIX[dtype]) {
    check(Number(info.metadata.general.file_type) === MIX[dtype].fileType,
      `[${dtype}] general.file_type ${info.metadata.general.file_type} = ${MIX[dtype].fileType}`);
    const got = Object.fromEntries(info.fullTensorInfo.map((t) => [t.name, t.ggmlType]));
    const bad = Object.entries(MIX[dtype].types).filter(([n, t]) => got[n] !== t);
    check(bad.length === 0, `[${dtype}] tensor types are llama.cpp's mix` +
      (bad.length ? `: ${bad.map(([n, t]) => `${n} is ${got[n]}, want ${t}`).join('; ')}` : ''));
  }
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: 128, sequences: 1, threads: 2 });

  // keel on the same file: its greedy continuation and logits.
  const keelLogits = path.join(runDir, `keel_logits_${dtype}.json`);
  const keelText = run(['generate', '--model', gguf, '--prompt', prompt, '--max-tokens', String(maxTokens),
    '--temperature', '0', '--no-stop', '--logits-out', keelLogits]);
  const ref = JSON.parse(fs.readFileSync(keelLogits, 'utf8'));
  const keelLogp = ref.logits.map(logSoftmax);
  const vocab = ref.logits[0].length;

  // llama.cpp's greedy continuation.
  // One sequence, its history cleared before each use.
  const seq = ctx.getSequence();
  const greedy = [];
  for await (const tok of seq.evaluate(Array.from(ref.prompt_ids), { temperature: 0, yieldEogToken: true })) {
    greedy.push(tok);
    if (greedy.length >= ref.ids.length) break;
  }
  let same = 0;
  while (same < greedy.length && greedy[same] === ref.ids[same]) same++;
  const llamaText = prompt + model.detokenize(greedy);
  // Where the two continuations part: how far below keel's own token keel
  // puts llama.cpp's (nats).
  const gapAtSplit = same < ref.ids.length && same < greedy.length
    ? keelLogp[same][ref.ids[same]] - keelLogp[same][greedy[same]] : Infinity;

  // llama.cpp's distributions along keel's tokens, from one pass.
  await seq.clearHistory();
  const all = [...ref.prompt_ids, ...ref.ids.slice(0, -1)];
  const first = ref.prompt_ids.length - 1;
  const opts = { temperature: 1, topK: vocab, topP: 1, minP: 0 };
  const out = await seq.controlledEvaluate(all.map((t, i) => (i >= first
    ? [t, { generateNext: { probabilities: true, options: opts } }] : t)));
  let maxChosen = 0, top1 = 0;
  for (let k = 0; k < ref.ids.length; k++) {
    const probs = out[first + k].next.probabilities;
    let best = -1, bestP = -1;
    for (const [tok, p] of probs) if (p > bestP || (p === bestP && tok < best)) { best = tok; bestP = p; }
    if (best === ref.ids[k]) top1++;
    maxChosen = Math.max(maxChosen, Math.abs(Math.log(probs.get(ref.ids[k]) ?? 0) - keelLogp[k][ref.ids[k]]));
  }

  // Perplexity over the held-out text: windows of 128 tokens, every token
  // after the first of each window predicted.
  const ids = Array.from(model.tokenize(held));
  let nll = 0, n = 0;
  const tokNll = [];
  for (let w = 0; w + 128 <= ids.length && w < 4 * 128; w += 128) {
    const win = ids.slice(w, w + 128);
    await seq.clearHistory();
    const r = await seq.controlledEvaluate(win.map((t, i) => (i < win.length - 1
      ? [t, { generateNext: { probabilities: true, options: opts } }] : t)));
    for (let i = 0; i < win.length - 1; i++) {
      const t = -Math.log(r[i].next.probabilities.get(win[i + 1]) ?? 1e-30);
      tokNll.push(t);
      nll += t;
      n++;
    }
  }
  const ppl = Math.exp(nll / n);
  console.log(`[${dtype}] ${(fs.statSync(gguf).size / 1024).toFixed(0)} KiB; llama.cpp perplexity ` +
    `${ppl.toFixed(4)} over ${n} held-out tokens; same file, keel vs llama.cpp: max |delta log p| of ` +
    `keel's tokens ${maxChosen.toExponential(3)}, top-1 ${top1}/${ref.ids.length}, greedy equal for ` +
    `${same}/${ref.ids.length}`);
  await ctx.dispose();
  await model.dispose();
  return { ppl, tokNll, maxChosen, top1, same, gapAtSplit, n: ref.ids.length, keelText, llamaText };
}

const res = {};
for (const dtype of ['f32', 'q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k']) res[dtype] = await evaluate(dtype);

for (const [dtype, r] of Object.entries(res)) {
  check(r.maxChosen < SAME_FILE_CHOSEN_BOUND && r.top1 >= TOP1_MIN * r.n,
    `[${dtype}] keel and llama.cpp on one file: |delta log p| ${r.maxChosen.toExponential(3)} < ` +
    `${SAME_FILE_CHOSEN_BOUND}, top-1 ${r.top1}/${r.n} >= ${TOP1_MIN * 100}%`);
  if (dtype === 'f32') continue;
  const rel = r.ppl / res.f32.ppl - 1;
  console.log(`ppl: ${dtype} ${r.ppl.toFixed(4)} (${rel >= 0 ? '+' : ''}${(100 * rel).toFixed(2)}% vs f32 ${res.f32.ppl.toFixed(4)})`);
  check(Math.abs(rel) < PPL_REL_BOUND[dtype],
    `[${dtype}] perplexity within ${100 * PPL_REL_BOUND[dtype]}% of f32's`);
}
// Ordering on a per-token measure, far steadier than perplexity differences
// of a few hundredths: the mean |delta| of each held-out token's negative
// log-likelihood against the f32 file's.
const drift = (k) => res[k].tokNll.reduce((a, t, i) => a + Math.abs(t - res.f32.tokNll[i]), 0) /
  res[k].tokNll.length;
console.log('drift: mean |delta nll| per held-out token vs f32: ' +
  ['q8_0', 'q6_k', 'q5_k_m', 'q4_k_m', 'q4_0'].map((k) => `${k} ${drift(k).toExponential(2)}`).join(', '));
// Measured 4.9e-3 < 1.0e-2 < 1.5e-2 < 2.3e-2 < 4.4e-2: each step about 1.5x or more.
check(drift('q8_0') < drift('q6_k') && drift('q6_k') < drift('q5_k_m') &&
  drift('q5_k_m') < drift('q4_k_m') && drift('q4_k_m') < drift('q4_0'),
  'drift ordering: q8_0 < q6_k < q5_k_m < q4_k_m < q4_0');

// The q4_k_m round trip: keel's file in llama.cpp, read back by keel.
const rt = res.q4_k_m;
console.log(`[q4_k_m] llama.cpp: ${JSON.stringify(rt.llamaText)}`);
console.log(`[q4_k_m] keel generate --model model-q4_k_m.gguf: ${JSON.stringify(rt.keelText.trimEnd())}`);
// Greedy continuations agree until the first near tie: llama.cpp's 8-bit
// activations move log p by hundredths, so where keel's top two tokens lie
// within SAME_FILE_CHOSEN_BOUND of each other either may win, and from there
// the texts go separate ways (measured on a Zen 3: apart after 19 tokens, at
// a gap of a few hundredths). A misread file parts at once and by whole nats.
const splitsAtTie = rt.gapAtSplit < SAME_FILE_CHOSEN_BOUND;
check(rt.keelText.trimEnd().length > prompt.length &&
  (rt.same >= Math.floor(TOP1_MIN * rt.n) || (rt.same >= 4 && splitsAtTie)),
  `[q4_k_m] round trip: keel continues its own q4_k_m file as llama.cpp does ` +
  `(${rt.same}/${rt.n} greedy tokens equal` +
  (rt.same < rt.n ? `, then a gap of ${rt.gapAtSplit.toExponential(2)} nats between the two choices in keel's logits)` : ')'));

// `keel train --init` from the q4_k_m file starts where the trained model is
// (a first loss far below a random model's ln 384 = 5.95).
{
  const out = run(['train', '--no-resume', '--init', path.join(runDir, 'model-q4_k_m.gguf'),
    'model.arch=llama', 'model.n_kv_head=2', 'model.n_layer=2', 'model.n_head=4', 'model.n_embd=256',
    'model.max_seq_len=128', 'train.seq_len=64', 'train.batch_size=8', 'train.steps=1',
    'train.eval_every=1000', 'train.eval_batches=1', 'train.peak_gflops=100', `data.corpus=${corpus}`,
    'data.vocab_size=384', 'data.val_fraction=0.1', `data.cache_dir=${path.join(work, 'cache')}`,
    `run.dir=${path.join(work, 'init_run')}`]);
  const loss = Number(/step 1\/1 loss ([0-9.]+)/.exec(out)?.[1]);
  console.log(`[q4_k_m] keel train --init model-q4_k_m.gguf: first loss ${loss}`);
  check(loss < 4.5, `[q4_k_m] train --init from the k-quant file starts trained (loss ${loss} < 4.5)`);
}

// A k-quant file cut short is refused by name, not read as garbage.
{
  const bytes = fs.readFileSync(path.join(runDir, 'model-q4_k_m.gguf'));
  const cut = path.join(runDir, 'cut-q4_k_m.gguf');
  fs.writeFileSync(cut, bytes.subarray(0, bytes.length - 4096));
  let msg = '';
  try {
    run(['generate', '--model', cut, '--prompt', prompt, '--max-tokens', '1']);
  } catch (e) {
    msg = String(e.stderr ?? e.message);
  }
  console.log(`[q4_k_m] truncated file: ${msg.trim()}`);
  check(/GGUF tensor '[^']+' data \[\d+, \d+\) runs past the end/.test(msg),
    '[q4_k_m] a truncated k-quant file is refused naming the tensor');
}

await llama.dispose();
if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('llama.cpp k-quant interop: all checks passed');
