#!/usr/bin/env bash
# Before/after identity of --json (issue 12 "Must show"): run eval-nll, sample and dimension on ONE model with
# two (or more) code versions and diff their JSON (and the sample files' bytes).
#
#   bench/layout_identity.sh RUN OUTDIR CODE_DIR...      e.g.
#   git -C . worktree add --detach /tmp/pre-layout 56c15fa^
#   python -m dsmctl train recipes/quickstart.yaml --out /tmp/cmp-run --set train.steps=200
#   bench/layout_identity.sh /tmp/cmp-run /tmp/cmp-out /tmp/pre-layout "$PWD"
#
# Model files written after 514a7f4 carry loss.consistency_weight in their recipe metadata, a key that code before
# it rejects ("unknown key"). When that key is 0 (the default: no penalty, the same model), the script compares on
# a copy of RUN whose model metadata drops it ($OUT/run-compat); every version reads that copy. Set COMPAT=0 to use
# RUN as it is.
# Each CODE_DIR is a checkout of dsmctl; it is put first on PYTHONPATH. One thread everywhere (OMP and torch).
# The first CODE_DIR is the reference; each other one is compared with it. Exit code 1 when anything differs
# besides elapsed-time fields.
set -u
RUN=$1; OUT=$2; shift 2
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"
if [ "${COMPAT:-1}" = 1 ]; then
  rm -rf "$OUT/run-compat"; cp -r "$RUN" "$OUT/run-compat"
  python - "$OUT/run-compat" <<'PY' || exit 2
import json, sys
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import load_file, save_file
for path in Path(sys.argv[1]).glob("model*.safetensors"):
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["dsmctl"])
    loss = meta["recipe"].get("loss", {})
    if loss.get("consistency_weight", 0) != 0:
        sys.exit(f"{path}: loss.consistency_weight = {loss['consistency_weight']}; older code cannot express it")
    loss.pop("consistency_weight", None)
    save_file(load_file(str(path)), str(path), metadata={"dsmctl": json.dumps(meta)})
    print(f"{path}: metadata without loss.consistency_weight (it was 0)")
PY
  RUN="$OUT/run-compat"
fi
i=0
for CODE in "$@"; do
  d="$OUT/v$i"; rm -rf "$d"; mkdir -p "$d"
  echo "$CODE ($(git -C "$CODE" rev-parse --short HEAD 2>/dev/null))" > "$d/code.txt"
  ( cd "$d" && export PYTHONPATH="$CODE"
    python -m dsmctl eval-nll "$RUN" --device cpu --json > eval.json 2> eval.err; echo $? > eval.rc
    python -m dsmctl sample "$RUN" --seeds 0-7 --steps 30 --device cpu --out samples --json > sample.json 2> sample.err
    echo $? > sample.rc
    python -m dsmctl dimension "$RUN" --t-grid 1e-3:1:4 --draws 8 --n-images 8 --device cpu --json \
      > dimension.json 2> dimension.err; echo $? > dimension.rc )
  i=$((i + 1))
done
python - "$OUT" "$#" <<'PY'
import hashlib, json, sys
from pathlib import Path

out, n = Path(sys.argv[1]), int(sys.argv[2])
TIME = ("elapsed", "seconds")  # elapsed-time fields (any path component containing these) are allowed to differ


def is_timing(key):
    return any(t in part for part in key.replace("[", ".").split(".") for t in TIME)


def flat(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flat(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def load(v, name):
    p = out / v / f"{name}.json"
    rc = (out / v / f"{name}.rc").read_text().strip()
    if rc != "0" or not p.read_text().strip():
        err = (out / v / f"{name}.err").read_text().strip().splitlines()
        return None, f"exit {rc}: {err[-1] if err else ''}"
    return dict(flat(json.loads(p.read_text()))), None


def files(v):
    """sha256 of each sample file; for .json files, of their content without timing fields (also reported)."""
    root = out / v / "samples"
    got = {}
    for p in sorted(root.rglob("*")) if root.is_dir() else []:
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".json":
                data = json.dumps({k: x for k, x in flat(json.loads(data)) if not is_timing(k)}).encode()
            got[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return got


status = 0
for j in range(1, n):
    ref, new = "v0", f"v{j}"
    print(f"== {(out / ref / 'code.txt').read_text().strip()}  vs  {(out / new / 'code.txt').read_text().strip()}")
    for name in ("eval", "sample", "dimension"):
        a, ea = load(ref, name)
        b, eb = load(new, name)
        if ea or eb:
            print(f"  {name}: cannot compare: reference {ea or 'ok'}; new {eb or 'ok'}")
            status = 1
            continue
        keys = sorted(set(a) | set(b))
        diff = [k for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>")]
        timing = [k for k in diff if is_timing(k)]
        other = [k for k in diff if k not in timing]
        print(f"  {name}: {len(keys)} fields, {len(other)} differ" + (f" (+ timing: {', '.join(timing)})" if timing else ""))
        for k in other:
            print(f"    {k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
        status |= bool(other)
    fa, fb = files(ref), files(new)
    same = [k for k in fa if fb.get(k) == fa[k]]
    print(f"  sample files: {len(fa)} vs {len(fb)}, {len(same)} identical (bytes; .json files less timing fields)"
          + "".join(f"\n    differs: {k}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)))
    status |= len(same) != len(fa) or len(fa) != len(fb)
sys.exit(status)
PY
