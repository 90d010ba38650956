#!/usr/bin/python3
"""Training throughput of a GPT-2 or Llama in PyTorch, the reference for `make bench-train`.

Same shapes and step as keel's: GPT-2 blocks (pre-LayerNorm, tanh GELU, tied
LM head) or Llama blocks (RMSNorm, rotary positions, SwiGLU, grouped-query
attention, untied head), AdamW with decoupled weight decay, global-norm
clipping. Attention through scaled_dot_product_attention (the fused kernel
where this torch has one; torch 1.13 has only a private, unfused version) or
written out; f32 or bf16 autocast. Prints one JSON line: tokens/s over the
timed steps and what BLAS/threads/attention/dtype were used.
Run with /usr/bin/python3 (the interpreter that has torch).
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_attention(q, k, v, mode):
    """(B, NH, T, HS) q and k, v with as many heads; causal softmax(q k^T / sqrt(HS)) v."""
    if mode == "sdpa":
        fused = getattr(F, "scaled_dot_product_attention", None)
        if fused is not None:
            return fused(q, k, v, is_causal=True)
        return F._scaled_dot_product_attention(q, k, v, None, 0.0, False, True)[0]
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
    return att @ v


def sdpa_kind():
    if getattr(F, "scaled_dot_product_attention", None) is not None:
        return "F.scaled_dot_product_attention"
    return "F._scaled_dot_product_attention (torch < 2.0: unfused)"


class Block(nn.Module):
    def __init__(self, C, NH, attn):
        super().__init__()
        self.NH = NH
        self.attn = attn
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = causal_attention(q, k, v, self.attn).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, V, L, NH, C, maxT, attn):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.h = nn.ModuleList(Block(C, NH, attn) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    """Rotates adjacent pairs (x[2i], x[2i+1]) of (B, NH, T, HS) by the angles in cos/sin (T, HS/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class LlamaBlock(nn.Module):
    def __init__(self, C, NH, NKV, F_, attn, eps):
        super().__init__()
        self.NH, self.NKV, self.HS, self.attn = NH, NKV, C // NH, attn
        self.attn_norm = RMSNorm(C, eps)
        self.q = nn.Linear(C, C, bias=False)
        self.k = nn.Linear(C, NKV * self.HS, bias=False)
        self.v = nn.Linear(C, NKV * self.HS, bias=False)
        self.o = nn.Linear(C, C, bias=False)
        self.mlp_norm = RMSNorm(C, eps)
        self.gate = nn.Linear(C, F_, bias=False)
        self.up = nn.Linear(C, F_, bias=False)
        self.down = nn.Linear(F_, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, self.NH, self.HS).transpose(1, 2)
        k = self.k(h).view(B, T, self.NKV, self.HS).transpose(1, 2)
        v = self.v(h).view(B, T, self.NKV, self.HS).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        rep = self.NH // self.NKV
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = causal_attention(q, k, v, self.attn).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.o(y)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, V, L, NH, NKV, C, F_, theta, attn, eps=1e-5):
        super().__init__()
        self.HS, self.theta = C // NH, theta
        self.embed = nn.Embedding(V, C)
        self.h = nn.ModuleList(LlamaBlock(C, NH, NKV, F_, attn, eps) for _ in range(L))
        self.norm = RMSNorm(C, eps)
        self.lm_head = nn.Linear(C, V, bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, targets):
        T = ids.shape[1]
        inv = self.theta ** (-torch.arange(0, self.HS, 2, dtype=torch.float32) / self.HS)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        cos, sin = ang.cos(), ang.sin()
        x = self.embed(ids)
        for b in self.h:
            x = b(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    ap.add_argument("--kv-heads", type=int, default=0, help="llama: 0 means --heads")
    ap.add_argument("--ffn", type=int, default=0, help="llama: 0 means 8/3 * embd rounded up to 64")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--attn", choices=["sdpa", "math"], default="math")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="bf16: autocast")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--embd", type=int, default=768)
    ap.add_argument("--max-seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.arch == "gpt2":
        model = GPT2(a.vocab, a.layers, a.heads, a.embd, a.max_seq, a.attn)
    else:
        ffn = a.ffn or (8 * a.embd // 3 + 63) // 64 * 64
        model = Llama(a.vocab, a.layers, a.heads, a.kv_heads or a.heads, a.embd, ffn, a.rope_theta, a.attn)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    losses = [step() for _ in range(a.warmup)]
    t0 = time.perf_counter()
    for _ in range(a.steps):
        losses.append(step())
    dt = time.perf_counter() - t0
    cfg = torch.__config__.show()
    blas = next((f.strip() for f in cfg.replace("\n", ",").split(",") if "BLAS_INFO" in f), "unknown")
    print(json.dumps({
        "tokens_per_s": a.batch * a.seq * a.steps / dt,
        "seconds_per_step": dt / a.steps,
        "first_loss": losses[0],
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": blas,
        "arch": a.arch,
        "dtype": a.dtype,
        "attention": sdpa_kind() if a.attn == "sdpa" else "written out (q k^T, mask, softmax, @ v)",
    }))


if __name__ == "__main__":
    main()
