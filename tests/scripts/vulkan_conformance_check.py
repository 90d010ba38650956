#!/usr/bin/env python3
"""`keel verify kernels --backends ref,vulkan` on the machine's Vulkan device
(lavapipe in CI), with the validation layer on: every row PASSes except the
f16 ones (SKIP), none FAILs; then with a fault injected into one kernel
(KEEL_FAULT_VULKAN_KERNEL=add leaves the last element unwritten) the command
fails and exactly that kernel's rows FAIL while every other row is unchanged."""
import argparse
import os
import re
import subprocess
import sys

ROW = re.compile(r"^(\S+)\s+(\S+)\s+(fwd|bwd)\s.*?\b(PASS|FAIL|SKIP)\b")
# The vulkan backend implements every kernel family in f32 and bf16 (and the
# quantized formats); only f16 rows may SKIP.
def claimed(dtype):
    return "f16" not in dtype.split("->")


def run(keel, extra_env):
    env = dict(os.environ, **extra_env)
    p = subprocess.run([keel, "verify", "kernels", "--backends", "ref,vulkan"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    rows = {}
    for line in p.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[(m.group(1), m.group(2), m.group(3))] = m.group(4)
    return p.returncode, p.stdout, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    a = ap.parse_args()
    failures = []

    # With the validation layer on (when installed): a misuse of the API is
    # an error even where lavapipe happens to compute the right numbers.
    rc, out, rows = run(a.keel, {"KEEL_VULKAN_VALIDATION": "1"})
    print(out)
    if rc != 0:
        failures.append(f"clean run exited {rc}")
    if "vulkan validation" in out:
        failures.append("the Vulkan validation layer reported errors (see above)")
    if not rows:
        sys.exit("FAIL: no conformance rows parsed")
    for key, status in sorted(rows.items()):
        if status == "FAIL":
            failures.append(f"row {key} FAILs")
        elif claimed(key[1]) and status != "PASS":
            failures.append(f"row {key} is {status}, expected PASS (the backend claims it)")
    passed = sum(1 for s in rows.values() if s == "PASS")
    print(f"clean: {passed} PASS, {sum(1 for s in rows.values() if s == 'SKIP')} SKIP")

    rc2, out2, rows2 = run(a.keel, {"KEEL_FAULT_VULKAN_KERNEL": "add"})
    failed = sorted(k for k, s in rows2.items() if s == "FAIL")
    print("with the add fault: rc", rc2, "FAIL rows", failed)
    if rc2 != 1:
        failures.append(f"broken-kernel run exited {rc2}, expected 1")
    want = sorted(k for k, s in rows.items() if k[0] == "add" and s == "PASS")
    if failed != want:
        failures.append(f"broken add: FAIL rows {failed}, expected exactly {want}")
    changed = [k for k in rows if k[0] != "add" and rows2.get(k) != rows[k]]
    if changed:
        failures.append(f"rows other than add changed under the fault: {changed}")

    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"PASS: {passed} rows PASS on vulkan; the broken add fails exactly its {len(want)} rows")


if __name__ == "__main__":
    main()
