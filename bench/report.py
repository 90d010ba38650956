#!/usr/bin/env python3
"""Turns the Google Benchmark JSON files written by scripts/bench.sh into one
JSON line per kernel/shape: its rate (GFLOP/s or GB/s) and the ratio to this
machine's roofline measured in the same run (best large SGEMM of the BLAS
libraries; best STREAM copy/triad bandwidth), plus the PyTorch peer for GEMM."""
import json
import os
import sys

GEMM_TARGET = 0.90  # f32 GEMM at transformer shapes vs the best large GEMM
MEM_TARGET = 0.60   # memory-bound kernels vs STREAM bandwidth


def load(path):
    try:
        with open(path) as f:
            return json.load(f).get("benchmarks", [])
    except (OSError, ValueError):
        return []


def best_runs(benchmarks):
    """name -> best (highest rate) iteration entry, or the error message."""
    out = {}
    for b in benchmarks:
        if b.get("run_type") == "aggregate":
            continue
        name = b.get("run_name", b["name"]).split("/iterations:")[0].split("/min_time:")[0]
        name = name.replace("/real_time", "")
        if b.get("error_occurred"):
            out.setdefault(name, {"error": b.get("error_message", "error")})
            continue
        rate = b.get("flop_per_s") or b.get("byte_per_s") or 0.0
        prev = out.get(name)
        if prev is None or "error" in prev or rate > prev["rate"]:
            out[name] = {"rate": rate, "unit": "flop" if "flop_per_s" in b else "byte"}
    return out


def main(outdir):
    runs = {}
    for prog in ("bench_roofline", "bench_gemm", "bench_kernels", "bench_qmatmul"):
        runs.update(best_runs(load(os.path.join(outdir, prog + ".json"))))
    peak = max([r["rate"] for n, r in runs.items() if n.startswith("roofline/sgemm/") and "rate" in r] or [0])
    bw = max([r["rate"] for n, r in runs.items() if n.startswith("roofline/stream/") and "rate" in r] or [0])
    torch = {}
    try:
        with open(os.path.join(outdir, "torch.jsonl")) as f:
            for line in f:
                d = json.loads(line)
                if "shape" in d:
                    torch[d["shape"]] = d["gflops"]
    except (OSError, ValueError):
        pass
    sgemm_auto = {}
    for name, r in runs.items():
        parts = name.split("/")
        if parts[0] == "sgemm" and parts[1] == "auto" and "rate" in r:
            sgemm_auto["/".join(parts[2:])] = r["rate"]
    for name, r in runs.items():
        parts = name.split("/")
        line = {"kernel": parts[0]}
        if parts[0] == "roofline":
            line = {"kernel": "roofline_" + parts[1], "variant": parts[2]}
            if len(parts) > 3:
                line["shape"] = parts[3]
        elif parts[0] == "bf16gemm":  # bf16gemm/<engine>/<output dtype>/<shape>
            line["variant"] = "/".join(parts[1:3])
            line["shape"] = "/".join(parts[3:])
        elif parts[0] in ("sgemm", "qmatmul"):
            line["variant"] = parts[1]
            line["shape"] = "/".join(parts[2:])
        else:
            line["dtype"] = parts[1]
            line["shape"] = "/".join(parts[2:])
        if "error" in r:
            line["error"] = r["error"]
            print(json.dumps(line))
            continue
        if r["unit"] == "flop":
            line["gflops"] = round(r["rate"] / 1e9, 2)
            if peak:
                line["ratio_to_peak"] = round(r["rate"] / peak, 3)
        else:
            line["gbps"] = round(r["rate"] / 1e9, 2)
            if bw:
                line["ratio_to_bandwidth"] = round(r["rate"] / bw, 3)
        if parts[0] == "sgemm":
            shape = line["shape"]
            if shape in torch:
                line["torch_gflops"] = round(torch[shape], 2)
                line["ratio_to_torch"] = round(r["rate"] / 1e9 / torch[shape], 3)
            if parts[1] == "auto" and peak:
                line["target"] = GEMM_TARGET
                line["meets_target"] = r["rate"] / peak >= GEMM_TARGET
        if parts[0] == "bf16gemm" and line["shape"] in sgemm_auto:
            line["ratio_to_f32"] = round(r["rate"] / sgemm_auto[line["shape"]], 3)
        if r["unit"] == "byte" and parts[0] not in ("roofline", "qmatmul") and bw:
            line["target"] = MEM_TARGET
            line["meets_target"] = r["rate"] / bw >= MEM_TARGET
        print(json.dumps(line))
    print(json.dumps({"roofline": {"sgemm_peak_gflops": round(peak / 1e9, 2),
                                   "stream_bandwidth_gbps": round(bw / 1e9, 2)}}))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/bench"))
