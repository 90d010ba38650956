#!/usr/bin/env python3
"""The layers of docs/DESIGN.md, checked over the source tree.

Each src/<layer>/README.md ends with a line "May include: a, b, ..." naming
the layers that layer's code may include. This check fails, naming the file
and line, when:
  - a file under src/<layer>/ or tests/<layer>/ includes "<other>/..." for a
    layer not on that list (tests link only their layer's library);
  - CMakeLists.txt links keel_<layer> to a keel_<other> library not on it;
  - a src/ folder has no README with that line, or DESIGN.md's layer block
    and the src/ folders disagree.

Usage: check_layers.py SOURCE_DIR
       check_layers.py --self-test SOURCE_DIR SCRATCH_DIR   (the check must
       catch a serve/ file that includes a train/ header)
"""
import pathlib
import re
import shutil
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*"([a-z_]+)/')


def allowed_layers(root):
    errors, allowed = [], {}
    for d in sorted(p for p in (root / "src").iterdir() if p.is_dir()):
        readme = d / "README.md"
        if not readme.exists():
            errors.append(f"{readme}: missing (say what the folder owns and what it may include)")
            continue
        m = re.search(r"^May include:\s*(.*)$", readme.read_text(), re.M)
        if not m:
            errors.append(f"{readme}: no 'May include:' line")
            continue
        names = [x.strip() for x in m.group(1).split(",")]
        allowed[d.name] = {x for x in names if x and not x.startswith("(")}
    return allowed, errors


def check(root):
    allowed, errors = allowed_layers(root)
    layers = set(allowed)
    for top in ("src", "tests"):
        for layer in sorted(layers):
            base = root / top / layer
            if not base.is_dir():
                continue
            for f in sorted(base.rglob("*")):
                if f.suffix not in (".h", ".cpp"):
                    continue
                for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                    m = INCLUDE.match(line)
                    if not m or m.group(1) not in layers | {"train", "serve"}:
                        continue
                    inc = m.group(1)
                    if inc != layer and inc not in allowed[layer]:
                        errors.append(f"{f.relative_to(root)}:{n}: {layer}/ may not include "
                                      f"{inc}/ ({line.strip()}); see src/{layer}/README.md")
    cmake = (root / "CMakeLists.txt").read_text()
    for m in re.finditer(r"keel_layer\((\w+)\s+DIRS[^)]*?DEPS([^)]*)\)", cmake):
        layer = m.group(1)
        for dep in re.findall(r"keel_(\w+)", m.group(2)):
            if layer in allowed and dep != layer and dep not in allowed[layer]:
                errors.append(f"CMakeLists.txt: keel_{layer} links keel_{dep}, which "
                              f"src/{layer}/README.md does not allow")
    design = (root / "docs" / "DESIGN.md").read_text()
    block = re.search(r"## Layers.*?```\n(.*?)```", design, re.S)
    listed = set(re.findall(r"^([a-z_]+)/", block.group(1), re.M)) if block else set()
    for missing in sorted(layers - listed):
        errors.append(f"docs/DESIGN.md: the layer block does not list src/{missing}/")
    for extra in sorted(listed - layers):
        errors.append(f"docs/DESIGN.md: lists {extra}/, which is not a folder of src/")
    return errors


def self_test(root, scratch):
    """A copy of the tree with one forbidden include must fail, naming it."""
    copy = pathlib.Path(scratch) / "layers_self_test"
    shutil.rmtree(copy, ignore_errors=True)
    for part in ("src", "tests", "docs"):
        shutil.copytree(root / part, copy / part)
    shutil.copy(root / "CMakeLists.txt", copy / "CMakeLists.txt")
    bad = copy / "src" / "serve" / "engine.cpp"
    bad.write_text('#include "train/trainer.h"\n' + bad.read_text())
    errors = check(copy)
    shutil.rmtree(copy)
    want = [e for e in errors if "src/serve/engine.cpp:1: serve/ may not include train/" in e]
    print("\n".join(errors))
    if len(errors) != 1 or not want:
        sys.exit("the layer check did not catch exactly the injected serve -> train include")
    print("ok: the injected include was caught")


def main():
    if sys.argv[1] == "--self-test":
        self_test(pathlib.Path(sys.argv[2]), sys.argv[3])
        return
    errors = check(pathlib.Path(sys.argv[1]))
    for e in errors:
        print(e)
    if errors:
        sys.exit(f"{len(errors)} layer violation(s)")
    print("ok: every include and link follows the layers")


if __name__ == "__main__":
    main()
