"""Shared driver of gpt2_torch.py and llama_torch.py: loads the weights and
batch the C++ test wrote, runs the PyTorch model in float64, and writes what
the test compares.

DIR/manifest.json (written by tests/model/test_model_vs_torch.cpp):
  config: the resolved keel ModelConfig (arch, vocab_size, n_layer, n_head,
          n_kv_head, n_embd, ffn_hidden, max_seq_len, rope_theta, norm_eps)
  B, T, ids, targets: the batch (raw little-endian int32 files, (B, T))
  params: [{name, shape, file (raw f32), decay}] in keel's order
  adamw: {lr, beta1, beta2, eps, weight_decay, steps}
Outputs, raw little-endian float64:
  logits.f64 (B, T, V) and grad.<i>.f64 of the first forward/backward,
  losses.f64 (steps): the loss before each AdamW step,
  param.<i>.f64: every parameter after `steps` AdamW steps on the same batch
  (torch.optim.AdamW, weight decay only in the group of decay=true).
"""
import json
import os
import sys

try:
    import numpy as np
    import torch
except Exception as e:  # the C++ test reports this exit code with the message
    print(f"cannot import numpy/torch with {sys.executable}: {e}", file=sys.stderr)
    sys.exit(3)

torch.set_default_dtype(torch.float64)


def load_params(d, man):
    params = {}
    order = []
    for spec in man["params"]:
        a = np.fromfile(os.path.join(d, spec["file"]), dtype="<f4").reshape(spec["shape"])
        t = torch.from_numpy(a.astype(np.float64)).requires_grad_(True)
        params[spec["name"]] = t
        order.append((spec["name"], spec["decay"]))
    return params, order


def load_ids(d, man, key):
    a = np.fromfile(os.path.join(d, man[key]), dtype="<i4").reshape(man["B"], man["T"])
    return torch.from_numpy(a.astype(np.int64))


def causal_attention(q, k, v):
    """q (B, NH, T, HS), k and v (B, NKV, T, HS): grouped-query causal attention."""
    nh, nkv = q.shape[1], k.shape[1]
    if nkv != nh:  # query head h reads kv head h // (NH / NKV)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
    T, hs = q.shape[2], q.shape[3]
    att = (q @ k.transpose(-2, -1)) / (hs ** 0.5)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return att @ v


def run(forward):
    """forward(params, cfg, ids) -> logits (B, T, V); drives the whole comparison."""
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    cfg = man["config"]
    params, order = load_params(d, man)
    ids = load_ids(d, man, "ids")
    targets = load_ids(d, man, "targets")
    opt_cfg = man["adamw"]
    decay = [params[n] for n, dec in order if dec]
    no_decay = [params[n] for n, dec in order if not dec]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=opt_cfg["lr"], betas=(opt_cfg["beta1"], opt_cfg["beta2"]), eps=opt_cfg["eps"])
    losses = []
    for step in range(opt_cfg["steps"]):
        opt.zero_grad()
        logits = forward(params, cfg, ids)
        V = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                                                 ignore_index=-1)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            logits.detach().numpy().astype("<f8").tofile(os.path.join(d, "logits.f64"))
            for i, (n, _) in enumerate(order):
                g = params[n].grad
                g = torch.zeros_like(params[n]) if g is None else g
                g.numpy().astype("<f8").tofile(os.path.join(d, f"grad.{i}.f64"))
        opt.step()
    np.array(losses, dtype="<f8").tofile(os.path.join(d, "losses.f64"))
    for i, (n, _) in enumerate(order):
        params[n].detach().numpy().astype("<f8").tofile(os.path.join(d, f"param.{i}.f64"))
