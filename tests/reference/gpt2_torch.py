#!/usr/bin/python3
"""GPT-2 in PyTorch (float64), written independently of keel, for
tests/model/test_model_vs_torch.cpp. Usage: gpt2_torch.py DIR (see
model_torch_common.py for DIR's contents).

Pre-LayerNorm blocks, learned positions, GELU (tanh), biases, LM head tied to
wte. Weights are (out, in) like torch.nn.Linear.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_torch_common as common  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def forward(p, cfg, ids):
    B, T = ids.shape
    C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg["norm_eps"]
    HS = C // NH
    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(T)][None]
    for l in range(cfg["n_layer"]):
        pre = f"h.{l}."
        h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        qkv = F.linear(h, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"])
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.reshape(B, T, NH, HS).transpose(1, 2) for t in (q, k, v))
        y = common.causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        h = F.gelu(F.linear(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"]),
                   approximate="tanh")
        x = x + F.linear(h, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
    return x @ p["wte.weight"].t()


if __name__ == "__main__":
    common.run(forward)
