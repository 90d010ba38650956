#!/usr/bin/python3
"""Llama in PyTorch (float64), written independently of keel, for
tests/model/test_model_vs_torch.cpp. Usage: llama_torch.py DIR (see
model_torch_common.py for DIR's contents).

RMSNorm, rotary positions on adjacent pairs (x[2i], x[2i+1]) as in Meta's
original code (angle t * theta^(-2i/HS)), SwiGLU MLP, grouped-query attention,
no biases, untied lm_head.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_torch_common as common  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x (B, H, T, HS): rotate each adjacent pair by angle t * theta^(-2i/HS)."""
    T, HS = x.shape[2], x.shape[3]
    freq = theta ** (-2.0 * torch.arange(HS // 2) / HS)
    ang = torch.arange(T)[:, None] * freq[None, :]  # (T, HS/2)
    c, s = ang.cos(), ang.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


def forward(p, cfg, ids):
    B, T = ids.shape
    C, NH, NKV, eps = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["norm_eps"]
    HS, theta = C // NH, cfg["rope_theta"]
    x = p["model.embed_tokens.weight"][ids]
    for l in range(cfg["n_layer"]):
        pre = f"model.layers.{l}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = F.linear(h, p[pre + "self_attn.q_proj.weight"]).reshape(B, T, NH, HS).transpose(1, 2)
        k = F.linear(h, p[pre + "self_attn.k_proj.weight"]).reshape(B, T, NKV, HS).transpose(1, 2)
        v = F.linear(h, p[pre + "self_attn.v_proj.weight"]).reshape(B, T, NKV, HS).transpose(1, 2)
        y = common.causal_attention(rope(q, theta), rope(k, theta), v)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), p[pre + "self_attn.o_proj.weight"])
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = F.silu(F.linear(h, p[pre + "mlp.gate_proj.weight"]))
        u = F.linear(h, p[pre + "mlp.up_proj.weight"])
        x = x + F.linear(g * u, p[pre + "mlp.down_proj.weight"])
    x = rms_norm(x, p["model.norm.weight"], eps)
    return F.linear(x, p["lm_head.weight"])


if __name__ == "__main__":
    common.run(forward)
