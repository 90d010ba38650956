#!/usr/bin/python3
"""Independent recomputation of keel's kernels for tests/backend/test_ref_vs_torch.cpp.

Usage: kernels_torch.py DIR

DIR/manifest.json lists cases written by the C++ test: each has an op name,
attributes, and input tensors stored as raw little-endian files (f32, bf16 and
f16 as their bits, i32, i8, q4_0/q8_0 blocks). For every case this script
recomputes the outputs in float64 with PyTorch (autograd for the backward
passes, torch.optim.AdamW for the optimizer) or, for the quantization rules,
with a NumPy reimplementation, and writes each output as raw float64 to
DIR/<case>.<output>.out. Gradient outputs include the initial contents of the
gradient buffer the C++ side accumulated into.
"""
import json
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except Exception as e:  # the C++ test turns this exit code into a failure with this message
    print(f"kernels_torch.py: cannot import numpy/torch with {sys.executable}: {e}", file=sys.stderr)
    sys.exit(3)

torch.set_default_dtype(torch.float64)
F64 = torch.float64

# ---------------------------------------------------------------- loading


def load_np(d, spec):
    """An input as a NumPy array of its stored type (bf16/f16 widened exactly to float32)."""
    path = os.path.join(d, spec["file"])
    shape = spec["shape"]
    dt = spec["dtype"]
    if dt == "f32":
        return np.fromfile(path, dtype="<f4").reshape(shape)
    if dt == "bf16":
        bits = np.fromfile(path, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dt == "f16":
        return np.fromfile(path, dtype="<f2").astype(np.float32).reshape(shape)
    if dt == "i32":
        return np.fromfile(path, dtype="<i4").reshape(shape)
    if dt == "i8":
        return np.fromfile(path, dtype="i1").reshape(shape)
    raise ValueError(f"unknown input dtype {dt}")


def load(d, spec):
    """An input as a float64 (or int64 for i32) torch tensor."""
    a = load_np(d, spec)
    if spec["dtype"] == "i32":
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(a.astype(np.float64))


def leaf(t):
    return t.clone().requires_grad_(True)


# ---------------------------------------------------------------- ops (torch, float64)


def op_matmul(x, a):
    A = x["a"].transpose(-1, -2) if a["trans_a"] else x["a"]
    B = x["b"].transpose(-1, -2) if a["trans_b"] else x["b"]
    c = a["alpha"] * torch.matmul(A, B)
    if a["beta"] != 0:
        c = c + a["beta"] * x["c"]
    return {"c": c}


def op_embedding(x, a):
    table = leaf(x["table"])
    out = F.embedding(x["ids"], table)
    out.backward(x["dout"])
    return {"out": out, "dtable": x["dtable"] + table.grad}


def op_layernorm(x, a):
    X, w, b = leaf(x["x"]), leaf(x["w"]), leaf(x["b"])
    C = X.shape[-1]
    y = F.layer_norm(X, (C,), w, b, a["eps"])
    y.backward(x["dy"])
    xd = x["x"]
    mean = xd.mean(-1)
    rstd = 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + a["eps"])
    return {"y": y, "mean": mean, "rstd": rstd, "dx": x["dx"] + X.grad,
            "dw": x["dw"] + w.grad, "db": x["db"] + b.grad}


def op_rmsnorm(x, a):
    X, w = leaf(x["x"]), leaf(x["w"])
    rstd = torch.rsqrt((X * X).mean(-1, keepdim=True) + a["eps"])
    y = X * rstd * w
    y.backward(x["dy"])
    return {"y": y, "rstd": rstd.squeeze(-1), "dx": x["dx"] + X.grad, "dw": x["dw"] + w.grad}


def rope(X, pos0, theta):
    B, T, NH, HS = X.shape
    i = torch.arange(HS // 2, dtype=F64)
    freq = theta ** (-2.0 * i / HS)
    ang = (pos0 + torch.arange(T, dtype=F64))[:, None] * freq[None, :]  # (T, HS/2)
    c, s = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x0, x1 = X[..., 0::2], X[..., 1::2]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).reshape(X.shape)


def op_rope(x, a):
    X = leaf(x["x"])
    y = rope(X, a["pos0"], a["theta"])
    y.backward(x["dy"])
    return {"y": y, "dx": x["dx"] + X.grad}


def op_attention(x, a):
    q, k, v = leaf(x["q"]), leaf(x["k"]), leaf(x["v"])
    B, Tq, NH, HS = q.shape
    Tk, NKV = k.shape[1], k.shape[2]
    g = NH // NKV
    qh = q.permute(0, 2, 1, 3)                                   # (B, NH, Tq, HS)
    kh = k.repeat_interleave(g, dim=2).permute(0, 2, 1, 3)       # (B, NH, Tk, HS)
    vh = v.repeat_interleave(g, dim=2).permute(0, 2, 1, 3)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * a["scale"]      # (B, NH, Tq, Tk)
    pos = (Tk - Tq) + torch.arange(Tq)[:, None]
    mask = torch.arange(Tk)[None, :] <= pos                      # query t sees keys <= Tk-Tq+t
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                             # (B, NH, Tq)
    o = torch.matmul(torch.softmax(s, dim=-1), vh).permute(0, 2, 1, 3)  # (B, Tq, NH, HS)
    o.backward(x["dout"])
    return {"o": o, "lse": lse, "dq": x["dq"] + q.grad, "dk": x["dk"] + k.grad,
            "dv": x["dv"] + v.grad}


def unary(fn):
    def op(x, a):
        X = leaf(x["x"])
        y = fn(X)
        y.backward(x["dy"])
        return {"y": y, "dx": x["dx"] + X.grad}
    return op


def op_swiglu(x, a):
    g, u = leaf(x["gate"]), leaf(x["up"])
    y = F.silu(g) * u
    y.backward(x["dy"])
    return {"y": y, "dgate": x["dgate"] + g.grad, "dup": x["dup"] + u.grad}


def op_add(x, a):
    return {"y": x["a"] + x["b"], "acc": x["y0"] + a["alpha"] * x["a"]}


def op_bias(x, a):
    y = x["y"] + x["bias"]
    return {"y": y, "dbias": x["dbias"] + x["dy"].reshape(-1, x["dy"].shape[-1]).sum(0)}


def op_cross_entropy(x, a):
    logits = leaf(x["logits"])
    t = x["targets"].clone()
    t[t < 0] = -100
    losses = F.cross_entropy(logits, t, reduction="none", ignore_index=-100)
    losses.backward(x["dloss"])
    return {"losses": losses, "lse": torch.logsumexp(x["logits"], dim=-1),
            "dlogits": x["dlogits"] + logits.grad}


def op_adamw(x, a):
    k = a.get("variance_keep", 1.0)
    if k != 1.0:
        return adamw_variance_keep(x, a, k)
    p = torch.nn.Parameter(x["param"].clone())
    opt = torch.optim.AdamW([p], lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"],
                            weight_decay=a["weight_decay"])
    opt.state[p] = {"step": torch.tensor(float(a["t"] - 1), dtype=torch.float32),
                    "exp_avg": x["m"].clone(), "exp_avg_sq": x["v"].clone()}
    p.grad = x["grad"] * a["grad_scale"]
    opt.step()
    st = opt.state[p]
    new = p.detach()
    return {"param": new, "m": st["exp_avg"], "v": st["exp_avg_sq"],
            "param_bf16": new.to(torch.float32).to(torch.bfloat16).to(F64)}


def adamw_variance_keep(x, a, k):
    # torch.optim.AdamW has no such variant: the update written out, with the
    # denominator sqrt(k * vhat + (1 - k) * mhat^2).
    g = x["grad"] * a["grad_scale"]
    b1, b2, t = a["beta1"], a["beta2"], a["t"]
    m = b1 * x["m"] + (1 - b1) * g
    v = b2 * x["v"] + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    denom = torch.sqrt(k * vhat + (1 - k) * mhat * mhat) + a["eps"]
    p0 = x["param"]
    new = p0 - a["lr"] * (mhat / denom + a["weight_decay"] * p0)
    return {"param": new, "m": m, "v": v,
            "param_bf16": new.to(torch.float32).to(torch.bfloat16).to(F64)}


def op_reduce(x, a):
    X = leaf(x["x"])
    kind = a["reduce"]
    if kind == "sum":
        y = X.sum(-1)
    elif kind == "mean":
        y = X.mean(-1)
    else:
        y = X.max(dim=-1).values
    y.backward(x["dy"])
    return {"y": y, "dx": x["dx"] + X.grad}


def op_sum_squares(x, a):
    return {"ss": (x["x"] * x["x"]).sum().reshape(1)}


def op_cast(x, a):
    src = x["src"].to(torch.float32)  # every input value is exact in f32
    return {"bf16": src.to(torch.bfloat16).to(F64), "f16": src.to(torch.float16).to(F64),
            "bf16_to_f16": src.to(torch.bfloat16).to(torch.float16).to(F64),
            "f16_to_bf16": src.to(torch.float16).to(torch.bfloat16).to(F64)}


# ---------------------------------------------------------------- quantization rules (NumPy)
# Written from the rules in backend.h: f32 arithmetic, round half to even,
# scales computed in f32 and stored as f16; Q4_0 is llama.cpp's rule.

f32 = np.float32


def q_i8_rows(w):
    amax = np.max(np.abs(w), axis=1).astype(f32)
    scale = (amax / f32(127)).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(w / scale[:, None]), -127, 127)
    q = np.where(scale[:, None] == 0, 0, q).astype(np.int64)
    return q, scale


def q8_0_blocks(w):
    """w (N, K) -> q (N, K/32, 32) int, d (N, K/32) f32 value of the stored f16 scale."""
    N, K = w.shape
    wb = w.reshape(N, K // 32, 32)
    amax = np.max(np.abs(wb), axis=-1).astype(f32)
    d = (amax / f32(127)).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(wb / d[..., None]), -127, 127)
    q = np.where(d[..., None] == 0, 0, q).astype(np.int64)
    return q, d.astype(np.float16).astype(f32)


def q4_0_blocks(w):
    """w (N, K) -> q - 8 (N, K/32, 32) int in [-8, 7], d (N, K/32) f32 value of the f16 scale."""
    N, K = w.shape
    wb = w.reshape(N, K // 32, 32)
    idx = np.argmax(np.abs(wb), axis=-1)  # first element of largest magnitude
    m = np.take_along_axis(wb, idx[..., None], axis=-1)[..., 0]
    d = (m / f32(-8)).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (wb / d[..., None]).astype(f32) + f32(8.5)
    v = np.where(d[..., None] == 0, f32(8.5), v)
    q = np.clip(np.trunc(v).astype(np.int64), 0, 15)
    return q - 8, d.astype(np.float16).astype(f32)


def dequant(qdt, w):
    N, K = w.shape
    if qdt == "i8":
        q, s = q_i8_rows(w)
        return (q.astype(f32) * s[:, None]).astype(f32)
    q, d = q8_0_blocks(w) if qdt == "q8_0" else q4_0_blocks(w)
    return (q.astype(f32) * d[..., None]).astype(f32).reshape(N, K)


def packed_bytes(qdt, w):
    """The stored bytes: i8 values, or GGUF blocks (f16 d, then int8 / nibble-packed quants)."""
    if qdt == "i8":
        return q_i8_rows(w)[0].astype(np.int8).view(np.uint8).reshape(-1)
    if qdt == "q8_0":
        q, d = q8_0_blocks(w)
        blk = np.zeros(q.shape[:2], dtype=[("d", "<f2"), ("qs", "i1", 32)])
        blk["qs"] = q
    else:
        q, d = q4_0_blocks(w)
        q = q + 8  # element j in the low nibble of byte j, element j+16 in the high nibble
        blk = np.zeros(q.shape[:2], dtype=[("d", "<f2"), ("qs", "u1", 16)])
        blk["qs"] = q[..., :16] | (q[..., 16:] << 4)
    blk["d"] = d.astype(np.float16)
    return np.frombuffer(blk.tobytes(), dtype=np.uint8)


def op_quantize(x, a, raw):
    qdt = a["qdt"]
    return {"w_deq": torch.from_numpy(dequant(qdt, raw["w"]).astype(np.float64)),
            "q_bytes": torch.from_numpy(packed_bytes(qdt, raw["w"]).astype(np.float64))}


def op_qmatmul(x, a, raw):
    X, W, qdt = raw["x"], raw["w"], a["qdt"]
    M, K = X.shape
    if qdt == "i8":
        qx, sx = q_i8_rows(X)
        qw, sw = q_i8_rows(W)
        dots = (qx @ qw.T).astype(np.float64)
        y = dots * sx.astype(np.float64)[:, None] * sw.astype(np.float64)[None, :]
    else:
        qx, dx = q8_0_blocks(X)                       # (M, nb, 32), (M, nb)
        qw, dw = q8_0_blocks(W) if qdt == "q8_0" else q4_0_blocks(W)
        isum = np.einsum("mbj,nbj->mnb", qx, qw).astype(np.float64)  # exact integers
        y = (isum * dw.astype(np.float64)[None] * dx.astype(np.float64)[:, None]).sum(-1)
    y_float = torch.from_numpy(X.astype(np.float64)) @ torch.from_numpy(W.astype(np.float64)).T
    return {"y": torch.from_numpy(y), "y_vs_float": y_float}


OPS = {
    "matmul": op_matmul, "embedding": op_embedding, "layernorm": op_layernorm,
    "rmsnorm": op_rmsnorm, "rope": op_rope, "attention": op_attention,
    "gelu": unary(lambda t: F.gelu(t, approximate="tanh")), "silu": unary(F.silu),
    "swiglu": op_swiglu, "add": op_add, "bias": op_bias, "cross_entropy": op_cross_entropy,
    "adamw": op_adamw, "reduce": op_reduce, "sum_squares": op_sum_squares, "cast": op_cast,
}
RAW_OPS = {"quantize": op_quantize, "qmatmul": op_qmatmul}


def main():
    if len(sys.argv) != 2:
        print("usage: kernels_torch.py DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.json")) as f:
        manifest = json.load(f)
    for case in manifest["cases"]:
        op, attrs = case["op"], case.get("attrs", {})
        if op in RAW_OPS:
            raw = {n: load_np(d, s) for n, s in case["inputs"].items()}
            outs = RAW_OPS[op](None, attrs, raw)
        else:
            x = {n: load(d, s) for n, s in case["inputs"].items()}
            outs = OPS[op](x, attrs)
        for name in case["outputs"]:
            if name not in outs:
                raise KeyError(f"case {case['name']}: op {op} has no output '{name}'")
            t = outs[name].detach().to(F64).contiguous().reshape(-1)
            t.numpy().astype("<f8").tofile(os.path.join(d, f"{case['name']}.{name}.out"))
    print(f"kernels_torch.py: {len(manifest['cases'])} cases, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
