#!/usr/bin/python3
"""Runs a Hugging Face style folder (config.json + model.safetensors) in
PyTorch float64 with Hugging Face's own conventions, written independently of
keel, for tests/train/test_model_export.cpp:
  gpt2:  Conv1D weights stored (in, out): y = x @ W + b; tied LM head.
  llama: rotate-half RoPE (x[i] pairs with x[i + HS/2]), as LlamaForCausalLM.
Usage: hf_folder_torch.py FOLDER IDS_JSON OUT. IDS_JSON is a list of token ids;
OUT gets the logits (T, V) as raw little-endian float64.
"""
import json
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except Exception as e:  # the C++ test reports this exit code with the message
    print(f"cannot import numpy/torch with {sys.executable}: {e}", file=sys.stderr)
    sys.exit(3)

torch.set_default_dtype(torch.float64)


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    dtypes = {"F32": "<f4", "F16": "<f2"}
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=dtypes[spec["dtype"]]).reshape(spec["shape"])
        out[name] = torch.from_numpy(a.astype(np.float64))
    return out


def causal_attention(q, k, v):
    nh, nkv = q.shape[1], k.shape[1]
    if nkv != nh:
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
    T, hs = q.shape[2], q.shape[3]
    att = (q @ k.transpose(-2, -1)) / (hs ** 0.5)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def gpt2(p, c, ids):
    T, C, NH = len(ids), c["n_embd"], c["n_head"]
    eps = c.get("layer_norm_epsilon", 1e-5)
    x = p["wte.weight"][ids] + p["wpe.weight"][torch.arange(T)]
    for l in range(c["n_layer"]):
        pre = f"h.{l}."
        h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
        qkv = h @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = (t.reshape(1, T, NH, C // NH).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = causal_attention(q, k, v).transpose(1, 2).reshape(T, C)
        x = x + y @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
        h = F.gelu(h @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps)
    return x @ p["wte.weight"].T


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def llama(p, c, ids):
    T, C = len(ids), c["hidden_size"]
    NH, NKV = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    HS, eps, theta = C // NH, c["rms_norm_eps"], c.get("rope_theta", 10000.0)
    inv = 1.0 / theta ** (torch.arange(0, HS, 2) / HS)
    emb = torch.cat([torch.arange(T)[:, None] * inv[None, :]] * 2, dim=-1)  # (T, HS)
    cos, sin = emb.cos(), emb.sin()

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    x = p["model.embed_tokens.weight"][ids]
    for l in range(c["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        h = norm(x, p[pre + "input_layernorm.weight"])
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).reshape(1, T, NH, HS).transpose(1, 2)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).reshape(1, T, NKV, HS).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).reshape(1, T, NKV, HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = causal_attention(q, k, v).transpose(1, 2).reshape(T, C)
        x = x + y @ p[pre + "self_attn.o_proj.weight"].T
        h = norm(x, p[pre + "post_attention_layernorm.weight"])
        g = F.silu(h @ p[pre + "mlp.gate_proj.weight"].T)
        x = x + (g * (h @ p[pre + "mlp.up_proj.weight"].T)) @ p[pre + "mlp.down_proj.weight"].T
    x = norm(x, p["model.norm.weight"])
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return x @ head.T


def main():
    folder, ids_path, out = sys.argv[1:4]
    with open(folder + "/config.json") as f:
        c = json.load(f)
    with open(ids_path) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long)
    p = load_safetensors(folder + "/model.safetensors")
    with torch.no_grad():
        logits = gpt2(p, c, ids) if c["model_type"] == "gpt2" else llama(p, c, ids)
    logits.numpy().astype("<f8").tofile(out)


if __name__ == "__main__":
    main()
