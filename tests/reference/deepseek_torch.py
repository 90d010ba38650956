#!/usr/bin/python3
"""DeepSeek (MLA + DeepSeekMoE) in PyTorch (float64), written independently of
keel, for tests/model/test_deepseek_vs_torch.cpp. Usage: deepseek_torch.py DIR.

DIR holds what model_torch_common.py describes, plus in manifest.json the
deepseek config keys and "bias": {layer: [E floats]} (the selection-only
routing bias of each MoE layer). Besides the common outputs it writes
route.<layer>.i32: the top-k expert ids (N, K) of the first forward, and the
loss includes the sequence-level balance loss when aux_loss_alpha > 0.

Multi-head latent attention as in DeepSeek-V2: q (optionally through a
low-rank latent with RMSNorm), a shared KV latent (RMSNorm) up-projected to
per-head k_nope and v, one rotary key part shared by all heads, softmax scale
(nope + rope)^-1/2. Rotary positions rotate adjacent pairs. DeepSeekMoE:
shared experts plus routed experts, sigmoid or softmax gating, top-k chosen by
score + bias (ties: smaller expert id), weights from the unbiased scores.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_torch_common as common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    """x (..., T, HS): rotate adjacent pairs by angle t * theta^(-2i/HS)."""
    T, HS = x.shape[-2], x.shape[-1]
    freq = theta ** (-2.0 * torch.arange(HS // 2) / HS)
    ang = torch.arange(T)[:, None] * freq[None, :]
    c, s = ang.cos(), ang.sin()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


def mla(h, p, pre, cfg):
    B, T, _ = h.shape
    NH, nope, rp, vd = cfg["n_head"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    R, QR, eps = cfg["kv_lora_rank"], cfg["q_lora_rank"], cfg["norm_eps"]
    D = nope + rp
    if QR > 0:
        q = F.linear(rms_norm(F.linear(h, p[pre + "q_a_proj.weight"]), p[pre + "q_a_layernorm.weight"], eps),
                     p[pre + "q_b_proj.weight"])
    else:
        q = F.linear(h, p[pre + "q_proj.weight"])
    q = q.view(B, T, NH, D).transpose(1, 2)
    q_nope, q_pe = q[..., :nope], q[..., nope:]
    ckv = F.linear(h, p[pre + "kv_a_proj_with_mqa.weight"])
    c, k_pe = ckv[..., :R], ckv[..., R:]
    kv = F.linear(rms_norm(c, p[pre + "kv_a_layernorm.weight"], eps), p[pre + "kv_b_proj.weight"])
    kv = kv.view(B, T, NH, nope + vd).transpose(1, 2)
    k_nope, v = kv[..., :nope], kv[..., nope:]
    q_pe = rope(q_pe, cfg["rope_theta"])
    k_pe = rope(k_pe.view(B, 1, T, rp), cfg["rope_theta"]).expand(B, NH, T, rp)
    qf = torch.cat((q_nope, q_pe), dim=-1)
    kf = torch.cat((k_nope, k_pe), dim=-1)
    att = (qf @ kf.transpose(-2, -1)) * D ** -0.5
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, NH * vd)
    return F.linear(y, p[pre + "o_proj.weight"])


def swiglu(x, g, u, d):
    return F.linear(F.silu(F.linear(x, g)) * F.linear(x, u), d)


def moe(h, p, pre, cfg, bias, routes, aux):
    B, T, C = h.shape
    E, K = cfg["n_routed_experts"], cfg["top_k"]
    x = h.reshape(B * T, C)
    logits = F.linear(x, p[pre + "gate.weight"])
    s = torch.sigmoid(logits) if cfg["gating"] == "sigmoid" else logits.softmax(dim=-1)
    key = s.detach() + bias[None, :]
    # Stable sort of -key: equal keys keep the smaller expert id first.
    idx = torch.sort(-key, dim=-1, stable=True).indices[:, :K]
    routes.append(idx.to(torch.int32).numpy().copy())
    w = s.gather(1, idx)
    if cfg["norm_topk_prob"]:
        w = w / w.sum(dim=-1, keepdim=True)
    w = w * cfg["routed_scaling"]
    y = torch.zeros_like(x)
    Wg, Wu, Wd = (p[pre + f"experts.{n}_proj.weight"] for n in ("gate", "up", "down"))
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        out = swiglu(x[tok], Wg[e], Wu[e], Wd[e])
        y = y.index_add(0, tok, out * w[tok, slot][:, None])
    if cfg["n_shared_experts"] > 0:
        y = y + swiglu(x, p[pre + "shared_experts.gate_proj.weight"],
                       p[pre + "shared_experts.up_proj.weight"],
                       p[pre + "shared_experts.down_proj.weight"])
    alpha = cfg["aux_loss_alpha"]
    if alpha > 0:
        sn = (s / s.sum(dim=-1, keepdim=True)).view(B, T, E)
        counts = torch.zeros(B, E)
        for b in range(B):
            counts[b] = torch.bincount(idx.view(B, T, K)[b].reshape(-1), minlength=E).double()
        f = counts * E / (K * T)
        P = sn.mean(dim=1)
        aux.append(alpha * (f * P).sum(dim=-1).mean())
    return y.view(B, T, C)


def make_forward(bias, routes, aux):
    def forward(p, cfg, ids):
        routes.clear()
        aux.clear()
        eps = cfg["norm_eps"]
        x = p["model.embed_tokens.weight"][ids]
        for l in range(cfg["n_layer"]):
            pre = f"model.layers.{l}."
            x = x + mla(rms_norm(x, p[pre + "input_layernorm.weight"], eps), p, pre + "self_attn.", cfg)
            h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
            if l < cfg["n_dense_layers"]:
                x = x + swiglu(h, p[pre + "mlp.gate_proj.weight"], p[pre + "mlp.up_proj.weight"],
                               p[pre + "mlp.down_proj.weight"])
            else:
                x = x + moe(h, p, pre + "mlp.", cfg, bias[str(l)], routes, aux)
        x = rms_norm(x, p["model.norm.weight"], eps)
        return F.linear(x, p["lm_head.weight"])
    return forward


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.json")) as f:
        man = json.load(f)
    cfg = man["config"]
    bias = {k: torch.tensor(v, dtype=torch.float64) for k, v in man["bias"].items()}
    params, order = common.load_params(d, man)
    ids = common.load_ids(d, man, "ids")
    targets = common.load_ids(d, man, "targets")
    routes, aux = [], []
    forward = make_forward(bias, routes, aux)
    o = man["adamw"]
    decay = [params[n] for n, dec in order if dec]
    no_decay = [params[n] for n, dec in order if not dec]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    losses = []
    for step in range(o["steps"]):
        opt.zero_grad()
        logits = forward(params, cfg, ids)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
        for a in aux:
            loss = loss + a
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            logits.detach().numpy().astype("<f8").tofile(os.path.join(d, "logits.f64"))
            for i, (n, _) in enumerate(order):
                g = params[n].grad
                g = torch.zeros_like(params[n]) if g is None else g
                g.numpy().astype("<f8").tofile(os.path.join(d, f"grad.{i}.f64"))
            for i, r in enumerate(routes):
                r.astype("<i4").tofile(os.path.join(d, f"route.{i}.i32"))
        opt.step()
    np.array(losses, dtype="<f8").tofile(os.path.join(d, "losses.f64"))
    for i, (n, _) in enumerate(order):
        params[n].detach().numpy().astype("<f8").tofile(os.path.join(d, f"param.{i}.f64"))


if __name__ == "__main__":
    main()
