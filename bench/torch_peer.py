#!/usr/bin/python3
"""PyTorch matmul at the shapes of bench_gemm.cpp, as a peer figure for
scripts/bench.sh. Prints one JSON line per shape: {"shape", "gflops"}."""
import json
import os
import sys
import time

import torch

SHAPES = [  # M, K, N, trans_a, trans_b (same list as bench/bench_gemm.cpp)
    (256, 768, 3072, False, False), (256, 3072, 768, False, False), (256, 768, 768, False, False),
    (256, 768, 50304, False, True), (256, 768, 3072, False, True), (256, 3072, 768, False, True),
    (256, 768, 2304, False, True), (256, 50304, 768, False, False), (3072, 256, 768, True, False),
    (768, 256, 3072, True, False), (768, 256, 768, True, False), (50304, 256, 768, True, False),
    (256, 50257, 768, False, False),
]


def main():
    torch.set_num_threads(int(os.environ.get("KEEL_BENCH_THREADS", "2")))
    torch.manual_seed(0)
    print(json.dumps({"peer": "torch", "version": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for m, k, n, ta, tb in SHAPES:
        a = torch.rand(k, m).t() if ta else torch.rand(m, k)
        b = torch.rand(n, k).t() if tb else torch.rand(k, n)
        c = torch.empty(m, n)
        torch.matmul(a, b, out=c)
        best, spent = float("inf"), 0.0
        while spent < 0.3 or best == float("inf"):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
        name = f"{m}x{k}x{n}/{'T' if ta else 'N'}{'T' if tb else 'N'}"
        print(json.dumps({"shape": name, "gflops": 2.0 * m * n * k / best / 1e9}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
