#!/usr/bin/env python3
"""`keel train` of a DeepSeek model (MLA attention, DeepSeekMoE routing with
its selection bias, statistics and balance loss) on the vulkan backend against
the cpu backend, on lavapipe in CI:

  - 12 steps on cpu and on vulkan: every loss within 1e-4 relative, the final
    validation loss within 0.5%, the routing metrics (expert load max/mean,
    entropy) alike;
  - a vulkan run killed at step 8 (checkpoint every 5) and resumed on
    vulkan ends with model.safetensors byte-identical to the uninterrupted
    vulkan run (the routing bias, load and balance integral live on the
    device and go through the checkpoint);
  - host waits per step bounded: the loss, the gradient norm and the routing
    statistics (read once per step, after the optimizer step is enqueued);
  - with the sequence-level balance loss and an expert capacity that drops
    slots: 6 steps within 1e-4, the same dropped-slot counts.
"""
import argparse
import os
import shutil
import subprocess

from vulkan_train_check import close_losses, fail, metrics


class Keel:
    def __init__(self, a):
        self.a = a
        shutil.rmtree(a.workdir, ignore_errors=True)
        os.makedirs(a.workdir)

    def run(self, name, backend, steps, extra=(), expect_rc=0):
        d = os.path.join(self.a.workdir, name)
        cmd = [self.a.keel, "train", "--config", self.a.config, "data.corpus=" + self.a.corpus,
               "data.vocab_size=384", "data.val_fraction=0.25",
               "data.cache_dir=" + os.path.join(self.a.workdir, "cache"), "model.n_layer=2",
               "model.n_embd=64", "model.kv_lora_rank=16", "model.qk_nope_head_dim=16",
               "model.qk_rope_head_dim=8", "model.v_head_dim=16", "model.moe_ffn_hidden=32",
               "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8",
               "train.steps=%d" % steps, "train.warmup_steps=5", "train.eval_every=0",
               "train.eval_batches=2", "train.threads=1", "train.backend=" + backend,
               "run.dir=" + d, *extra]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != expect_rc:
            fail("%s on %s exited %d (expected %d):\n%s" % (name, backend, p.returncode, expect_rc,
                                                             p.stdout[-4000:]))
        return d, p.stdout


# f32 on two devices differs by summation order only; a token whose top-k
# flips between devices moves the loss by far more than 1e-4.
def close(a, b, what):
    if [r["step"] for r in a] != [r["step"] for r in b]:
        fail("%s: steps %s vs %s" % (what, [r["step"] for r in a], [r["step"] for r in b]))
    close_losses(a, b, [r["step"] for r in a], what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    k = Keel(a)
    steps = 12
    cpu, _ = k.run("cpu", "cpu", steps)
    vk, _ = k.run("vk", "vulkan", steps)
    mc, mv = metrics(cpu), metrics(vk)
    close(mc, mv, "deepseek cpu vs vulkan")
    vc, vv = mc[-1]["val_loss"], mv[-1]["val_loss"]
    if abs(vc - vv) / vc > 0.005:
        fail("final validation loss %r (cpu) vs %r (vulkan): over 0.5%%" % (vc, vv))
    print("final validation loss: cpu %.6f, vulkan %.6f (%.3g relative)" % (vc, vv, abs(vc - vv) / vc))
    # Expert load max/mean counts slots: one token moved to another expert
    # changes it by E / (N K) = 8 / 512 = 0.016, so 0.05 allows a few near-tie
    # flips; the entropy is a sum of f64 terms with an f32 log on the device.
    for key, tol in (("expert_load_max_mean", 0.05), ("routing_entropy", 1e-4)):
        worst = max(abs(x[key] - y[key]) for x, y in zip(mc, mv))
        if worst > tol:
            fail("%s differs between cpu and vulkan by %.3g (bound %g)" % (key, worst, tol))
        print("%s: largest cpu/vulkan difference %.3g" % (key, worst))
    # A step waits for the loss, the gradient norm, then (after the optimizer
    # step is enqueued) the routing load and statistics of each MoE layer.
    moe_layers = 1
    bound = 3 + 2 * moe_layers
    for r in mv[1:-1]:
        if not 0 < r["host_syncs"] <= bound:
            fail("vulkan step %d waited on the device %d times (bound %d)" % (r["step"], r["host_syncs"], bound))
    print("host waits per vulkan step: %s (bound %d)" % (sorted({r["host_syncs"] for r in mv[1:-1]}), bound))

    ck = ("checkpoint.every=5", "checkpoint.async=false")
    k.run("vk_killed", "vulkan", steps, (*ck, "resilience.faults=kind=kill,step=8"), expect_rc=-9)
    d, out = k.run("vk_killed", "vulkan", steps, ck)
    # The in-memory snapshot of step 7 (the device state read back after
    # every step) is newer than the disk checkpoint of step 5.
    if "resumed from the in-memory snapshot (step 7" not in out:
        fail("the resumed vulkan run did not resume from the snapshot of step 7:\n%s" % out[-3000:])
    with open(os.path.join(vk, "model.safetensors"), "rb") as f1, \
            open(os.path.join(d, "model.safetensors"), "rb") as f2:
        if f1.read() != f2.read():
            fail("killed at step 8 and resumed on vulkan: model.safetensors differs from the "
                 "uninterrupted vulkan run")
    lu = [r["loss"] for r in mv]
    lr = [r["loss"] for r in metrics(d)]
    if lu != lr:
        fail("killed and resumed on vulkan: losses %s vs uninterrupted %s" % (lr, lu))
    print("killed at step 8, resumed from the in-memory snapshot of step 7 on vulkan: parameters "
          "and every loss bit-identical")

    extra = ("model.aux_loss_alpha=0.01", "model.capacity_factor=1.0")
    c2, _ = k.run("cpu_aux", "cpu", 6, extra)
    v2, _ = k.run("vk_aux", "vulkan", 6, extra)
    m2c, m2v = metrics(c2), metrics(v2)
    close(m2c, m2v, "balance loss and capacity: cpu vs vulkan")
    dc, dv = [r.get("dropped_tokens") for r in m2c], [r.get("dropped_tokens") for r in m2v]
    if dc != dv or not any(dc):
        fail("dropped slots per step: cpu %s, vulkan %s (expected equal, some dropped)" % (dc, dv))
    print("dropped slots per step equal on both: %s" % dc)
    shutil.rmtree(a.workdir, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
