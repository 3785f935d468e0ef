"""Issue 13 replayed: every bad input gets one line and exit 2; full disks and hostile files lose nothing.

Every case runs the command line as a user would (in this process through `python -m dsmctl`'s own
__main__, or in a subprocess where the exit status, a memory limit or a signal matters) and checks:
  - the exit code (2 for bad input, unless documented otherwise: docs/training.md, docs/data.md);
  - stderr is exactly one line starting with "error:", no traceback, naming the culprit;
  - nothing outside the test's temporary directory changed (the repository, the shared fixtures);
  - where the command failed before doing any work, nothing was left behind in the temporary directory.
Big-memory cases run under RLIMIT_AS set inside the test; full-disk cases on a real small tmpfs (root only).
"""
import json
import math
import os
import resource
import runpy
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
TINY = ["--set", "model.widths=[4,8]", "--set", "model.mid_width=8", "--set", "model.layers_per_block=2",
        "--set", "model.base=none", "--set", "train.batch_size=4", "--set", "train.steps=4",
        "--set", "train.ckpt_every=2", "--set", "train.log_every=2", "--set", "eval.n_images=8",
        "--set", "eval.batch_size=8"]
MEM_LIMIT = 4_000_000 * 1024  # the issue's `ulimit -v 4000000`
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SKIP_WALK = {".git", "__pycache__", ".pytest_cache", ".venv"}


# ---------------------------------------------------------------- helpers

def tree(root):
    """{relative path: (size, mtime_ns)} of every file and folder under root (folders: size None)."""
    root = Path(root)
    out = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_WALK]
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.join(rel, d)] = (None, None)
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.join(rel, f)] = (st.st_size, st.st_mtime_ns)
    return out


def base_env(home):
    env = {k: v for k, v in os.environ.items() if k not in ("DSMCTL_DEBUG",)}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HOME=str(home), TMPDIR=str(home), MPLCONFIGDIR=str(home / "mpl"), HF_HOME=str(home / "hf"))
    return env


def subprocess_cli(args, cwd, env, mem=None, timeout=600):
    def limit():
        if mem:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    return subprocess.run([sys.executable, "-m", "dsmctl", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Box:
    """A test's sandbox: cwd, HOME and TMPDIR inside tmp_path; runs dsmctl in-process or in a subprocess."""

    def __init__(self, path, monkeypatch, capsys):
        self.path, self.mp, self.capsys = path, monkeypatch, capsys
        self.home = path.parent / f"{path.name}-home"
        self.home.mkdir(exist_ok=True)
        self.env = base_env(self.home)

    def cli(self, *args):
        """`dsmctl ARGS` in this process (the package's own __main__): exit code, stdout, stderr."""
        self.capsys.readouterr()
        self.mp.setattr(sys, "argv", ["dsmctl", *map(str, args)])
        self.mp.delenv("DSMCTL_DEBUG", raising=False)
        code = 0
        try:
            runpy.run_module("dsmctl", run_name="__main__", alter_sys=False)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # an exception escaping main() would be a traceback for the user
            captured = self.capsys.readouterr()
            raise AssertionError(f"dsmctl {' '.join(map(str, args))} raised {type(e).__name__}: {e}\n"
                                 f"{captured.err}") from e
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def sub(self, *args, mem=None, env=None, timeout=600):
        r = subprocess_cli(args, self.path, {**self.env, **(env or {})}, mem, timeout)
        return Result(r.returncode, r.stdout, r.stderr)

    def bad(self, *args, needles=(), code=2, sub=False, mem=None, leaves=False, env=None):
        """Run a bad command: exit `code`, one stderr line naming every needle; unless `leaves`, the sandbox
        is byte for byte what it was (nothing written, nothing left behind)."""
        before = tree(self.path)
        r = self.sub(*args, mem=mem, env=env) if (sub or mem) else self.cli(*args)
        one_line(r, code, needles)
        if not leaves:
            after = tree(self.path)
            assert after == before, f"left behind or changed: {sorted(set(after.items()) ^ set(before.items()))}"
        return r


def one_line(r, code=2, needles=()):
    assert "Traceback" not in r.err, r.err
    lines = r.err.strip().splitlines()
    assert r.code == code, f"exit {r.code}, expected {code}: {r.err}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{r.err}"
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert str(n).lower() in lines[0].lower(), f"{n!r} not named in: {lines[0]}"
    return lines[0]


# ---------------------------------------------------------------- shared fixtures (built through the CLI)

@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """A prepared 16x16 demo subset and a tiny trained run with checkpoints at steps 2 and 4."""
    top = tmp_path_factory.mktemp("hostile-shared")
    env = base_env(top / "home")
    (top / "home").mkdir()
    r = subprocess_cli(["prepare", "demo", "--out", top / "data", "--limit", "64", "-q"], top, env)
    assert r.returncode == 0, r.stderr
    r = subprocess_cli(["train", RECIPE, "--set", f"data.source={top / 'data'}", *TINY, "--out", top / "run", "-q"],
                       top, env)
    assert r.returncode == 0, r.stderr
    return top


@pytest.fixture
def box(tmp_path, monkeypatch, capsys, shared):
    yield from sandbox(tmp_path, monkeypatch, capsys, (ROOT, shared))


def sandbox(tmp_path, monkeypatch, capsys, watched):
    """A Box in tmp_path/w; afterwards, nothing under the watched folders may have changed (shared by the input
    tests' `box` fixtures)."""
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    outside = {p: tree(p) for p in watched}
    yield Box(work, monkeypatch, capsys)
    for p, before in outside.items():
        after = tree(p)
        assert after == before, f"changed outside the test's directory ({p}): " \
                                f"{sorted(set(after.items()) ^ set(before.items()))[:10]}"


@pytest.fixture
def data(shared):
    return shared / "data"


@pytest.fixture
def run(shared):
    return shared / "run"


@pytest.fixture
def model(shared):
    return shared / "run" / "model.safetensors"


def copy(src, dst):
    (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, dst)
    return Path(dst)


def train_args(data_dir, out, *more):
    return ["train", RECIPE, "--set", f"data.source={data_dir}", *TINY, *more, "--out", out, "-q"]


@pytest.fixture
def readonly(tmp_path):
    """A read-only directory: a read-only tmpfs for root (chmod does not stop root), else mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    if IS_ROOT:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)],
                          capture_output=True).returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
        try:
            yield d
        finally:
            subprocess.run(["umount", str(d)], capture_output=True)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 3 MB tmpfs (root only)."""
    if not IS_ROOT:
        pytest.skip("full-disk cases need root to mount a small tmpfs")
    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk, leave=0):
    """Fill the filesystem of `disk` up to `leave` free bytes with one file; returns it."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, free))
            f.flush()
        except OSError:
            pass
    return filler


def read_st(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def write_st(path, tensors, metadata):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)


def doctored_model(src, dst, meta_edit=None, tensor_edit=None, raw_meta=None):
    tensors, md = read_st(src)
    meta = json.loads(md["dsmctl"])
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    write_st(dst, tensors, {"dsmctl": raw_meta if raw_meta is not None else json.dumps(meta)})
    return dst


def first_weight(tensors):
    return next(k for k, v in tensors.items() if v.ndim == 4)


def png_header_only(path, width, height):
    """A PNG whose header claims width x height (no real pixel data needed to trip the bomb check)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def edit_manifest(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


# ================================================================ full disk and unwritable places

@pytest.mark.parametrize("cmd", ["train", "prepare", "sample"])
def test_readonly_out_is_one_line(cmd, box, readonly, data, model):
    out = readonly / "out"
    args = {"train": train_args(data, out),
            "prepare": ["prepare", "demo", "--out", out, "-q"],
            "sample": ["sample", model, "--n", "2", "--steps", "2", "--out", out, "-q"]}[cmd]
    box.bad(*args, needles=[str(out), "writable"])


@pytest.mark.parametrize("where", ["readonly", "missing"])
def test_per_image_to_unwritable_or_missing_dir_fails_before_evaluating(where, box, readonly, model):
    target = (readonly if where == "readonly" else box.path / "no" / "such") / "p.csv"
    box.bad("eval-nll", model, "--n-images", "4", "--per-image", target, needles=["--per-image", str(target.parent)])


def test_prepare_onto_a_full_disk(box, small_tmpfs):
    """A 5 MB .npz onto a 3 MB tmpfs holding an older prepared copy: one line, exit 2, the old copy intact,
    and the same command finishes once there is room."""
    out = small_tmpfs / "d"
    r = box.sub("prepare", npz(box.path / "small.npz", train=np.full((10, 1, 8, 8), 7, np.uint8)), "--out", out, "-q")
    assert r.code == 0, r.err
    old = tree(out)
    big = npz(box.path.parent / "big.npz", train=np.random.default_rng(0).integers(0, 256, (1280, 1, 64, 64), np.uint8))
    r = box.sub("prepare", big, "--out", out, "--force", "-q")
    one_line(r, 2, [str(out), "space"])
    assert tree(out) == old
    assert box.sub("prepare", "--verify", out).code == 0
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_tmpfs)], check=True)
    r = box.sub("prepare", big, "--out", out, "--force", "-q")
    assert r.code == 0, r.err
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["n"] == 1280
    assert [p.name for p in small_tmpfs.iterdir() if p.name.startswith(".") and "lock" not in p.name] == []


@pytest.mark.slow
def test_checkpoint_save_on_a_full_disk(box, small_tmpfs, data):
    """Resume a run on a disk with too little room for the next checkpoint: one line, exit 2, the last
    checkpoint and `latest` intact, no temporary directory left; with room again, resume finishes."""
    run = small_tmpfs / "run"
    r = box.sub(*train_args(data, run, "--set", "train.steps=2"))
    assert r.code == 0, r.err
    ck = run / "checkpoints"
    before = tree(ck)
    filler = fill(small_tmpfs, leave=24 << 10)
    r = box.sub(*train_args(data, run, "--set", "train.steps=4"))
    one_line(r, 2, [str(run), "space"])
    assert tree(ck) == before
    filler.unlink()
    # two kept checkpoints (1.25 MB each) + the export written beside the previous one need > 3 MB
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_tmpfs)], check=True)
    r = box.sub(*train_args(data, run, "--set", "train.steps=4"))
    assert r.code == 0, r.err
    assert (ck / "latest").read_text().strip() == "step-0000004"
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]


# ================================================================ hostile or damaged model files

@pytest.mark.parametrize("latest", ["..", "../..", "/etc", "step-0000004/../..", "a" * 5000])
def test_latest_pointer_outside_the_checkpoints(latest, box, run):
    r = copy(run, box.path / "r")
    (r / "model.safetensors").unlink()
    (r / "checkpoints" / "latest").write_text(latest + "\n")
    box.bad("eval-nll", r, "--n-images", "4", needles=["latest"])


@pytest.mark.parametrize("raw", ["[1, 2]", '"abc"', "null", "3", "{bad json"])
def test_model_metadata_that_is_not_an_object(raw, box, model):
    bad = doctored_model(model, box.path / "m.safetensors", raw_meta=raw)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[str(bad), "metadata"])


@pytest.mark.parametrize("field, value", [("shape", "abc"), ("shape", [1, -16, 16]), ("shape", [1, 1e9, 1e9]),
                                          ("recipe", "abc"), ("recipe", None)])
def test_model_metadata_with_wrong_types(field, value, box, model):
    bad = doctored_model(model, box.path / "m.safetensors", meta_edit=lambda m: m.__setitem__(field, value))
    box.bad("eval-nll", bad, "--n-images", "4", needles=[str(bad), field])


@pytest.mark.parametrize("value", ["abc", {"constant": "abc"}, {"constant": float("nan"), "stderr": 0, "t_max": 10,
                                                                 "anchor": "paper"}])
def test_stored_constant_of_the_wrong_type(value, box, model):
    bad = doctored_model(model, box.path / "m.safetensors", meta_edit=lambda m: m.__setitem__("normalization", value))
    box.bad("eval-nll", bad, "--n-images", "4", "--stored-constant", needles=[str(bad), "normalization"])


@pytest.mark.parametrize("dtype", ["int8", "bool", "float16", "int64"])
def test_weights_of_the_wrong_dtype_are_refused_naming_the_tensor(dtype, box, model):
    name = {}

    def edit(t):
        name["k"] = first_weight(t)
        t[name["k"]] = t[name["k"]].astype(dtype)

    bad = doctored_model(model, box.path / "m.safetensors", tensor_edit=edit)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[name["k"], dtype])


def test_weights_of_the_wrong_shape_name_the_tensor(box, model):
    name = {}

    def edit(t):
        name["k"] = first_weight(t)
        t[name["k"]] = np.zeros((3, 3), np.float32)

    bad = doctored_model(model, box.path / "m.safetensors", tensor_edit=edit)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[name["k"], "shape"])


def test_non_finite_weights_are_refused_naming_the_tensor(box, model):
    name = {}

    def edit(t):
        name["k"] = first_weight(t)
        t[name["k"]] = np.full_like(t[name["k"]], np.nan)

    bad = doctored_model(model, box.path / "m.safetensors", tensor_edit=edit)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[name["k"], "finite"])


def run_with_manifest_files(run, dst, files):
    """A copy of `run` whose step-0000004 checkpoint manifest has `files` replaced."""
    r = copy(run, dst)
    m = r / "checkpoints" / "step-0000004" / "manifest.json"
    doc = json.loads(m.read_text())
    doc["files"] = files
    m.write_text(json.dumps(doc))
    return r


@pytest.mark.parametrize("files", [["model.safetensors", "state.pt"], {"model.safetensors": 5, "state.pt": 7},
                                   {"model.safetensors": {"bytes": "x", "sha256": 1}}, "abc"])
def test_resume_path_with_a_malformed_manifest(files, box, run, data):
    r = run_with_manifest_files(run, box.path / "r", files)
    box.bad(*train_args(data, r, "--resume", r / "checkpoints" / "step-0000004"), needles=["manifest.json"])


@pytest.mark.slow
@pytest.mark.parametrize("files", [["model.safetensors", "state.pt"], {"model.safetensors": 5, "state.pt": 7}])
def test_resume_auto_skips_a_malformed_manifest_with_a_warning(files, box, run, data):
    r = run_with_manifest_files(run, box.path / "r", files)
    res = box.cli(*train_args(data, r, "--set", "train.steps=6"))
    assert res.code == 0, res.err
    assert "skipping damaged checkpoint" in res.err and "manifest.json" in res.err and "Traceback" not in res.err
    assert "resumed from" in res.err and "step-0000002" in res.err


# ================================================================ hostile or damaged data files

@pytest.mark.parametrize("damage", ["truncated", "crc"])
def test_damaged_npz_to_prepare(damage, box):
    p = npz(box.path / "x.npz", train=np.random.default_rng(0).integers(0, 256, (50, 1, 8, 8), np.uint8))
    raw = bytearray(p.read_bytes())
    if damage == "truncated":
        raw = raw[:len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    box.bad("prepare", p, "--out", box.path / "d", "-q", needles=[str(p)])


def test_decompression_bomb_in_an_image_folder(box):
    folder = box.path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    png_header_only(folder / "b.png", 20000, 20000)
    box.bad("prepare", folder, "--out", box.path / "d", "-q", needles=[str(folder / "b.png"), "pixels"])


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_manifest_file_outside_the_prepared_dir(where, box, data):
    d = copy(data, box.path / "sub" / "d")
    np.save(box.path / "x.npy", np.zeros((64, 1, 16, 16), np.uint8))
    target = "../../x.npy" if where == "relative" else str(box.path / "x.npy")
    edit_manifest(d, lambda m: m["splits"]["train"].__setitem__("file", target))
    box.bad("train", RECIPE, "--set", f"data.source={d}", *TINY, "--dry-run", needles=["manifest.json", target])
    box.bad("prepare", "--verify", d, needles=["manifest.json", target])


@pytest.mark.parametrize("edit, key", [
    (lambda m: m["splits"]["train"].pop("file"), "file"),
    (lambda m: m.pop("splits"), "splits"),
    (lambda m: m.__setitem__("splits", ["train"]), "splits"),
    (lambda m: m["splits"]["train"].__setitem__("n", "many"), "n"),
    (lambda m: m["splits"]["train"].__setitem__("shape", "abc"), "shape"),
])
def test_manifest_missing_or_mistyped_keys(edit, key, box, data):
    d = copy(data, box.path / "d")
    edit_manifest(d, edit)
    box.bad("train", RECIPE, "--set", f"data.source={d}", *TINY, "--dry-run", needles=["manifest.json", key])


def test_labels_path_outside_the_prepared_dir_fails_verify(box, data):
    d = copy(data, box.path / "sub" / "d")
    np.save(box.path / "labels.npy", np.zeros(64, np.int64))
    edit_manifest(d, lambda m: m["splits"]["train"].update(labels="../../labels.npy", labels_sha256="0" * 64))
    box.bad("prepare", "--verify", d, needles=["manifest.json", "../../labels.npy"])


@pytest.mark.parametrize("change", ["byte", "appended"])
def test_train_rechecks_a_prepared_array_modified_after_prepare(change, box, data):
    d = copy(data, box.path / "d")
    f = d / "train.npy"
    raw = bytearray(f.read_bytes())
    if change == "byte":
        raw[-100] ^= 0x01
    else:
        raw += b"\0" * 256
    f.write_bytes(bytes(raw))
    box.bad(*train_args(d, box.path / "run"), needles=[str(f), "prepare"])


def test_train_verify_data_full_also_catches_a_change(box, data):
    d = copy(data, box.path / "d")
    f = d / "test.npy"
    raw = bytearray(f.read_bytes())
    raw[-7] ^= 0x01
    f.write_bytes(bytes(raw))
    box.bad(*train_args(d, box.path / "run", "--verify-data", "full"), needles=[str(f)])


def test_train_verify_data_rejects_an_unknown_mode(box, data):
    box.bad(*train_args(data, box.path / "run", "--verify-data", "sometimes"), needles=["--verify-data"])


# ================================================================ degenerate data

@pytest.mark.parametrize("name, array, needle", [
    ("zero-images", np.zeros((0, 1, 8, 8), np.uint8), "no images"),
    ("zero-channels", np.zeros((4, 0, 8, 8), np.uint8), "0"),
    ("zero-size", np.zeros((4, 1, 0, 0), np.uint8), "0"),
    ("zero-d", np.zeros((4, 0), np.float32), "0"),
    ("nan", np.full((4, 1, 8, 8), np.nan, np.float32), "finite"),
    ("inf", np.concatenate([np.zeros((3, 1, 8, 8)), np.full((1, 1, 8, 8), np.inf)]).astype(np.float32), "finite"),
])
def test_prepare_refuses_degenerate_data(name, array, needle, box):
    p = box.path / f"{name}.npy"
    np.save(p, array)
    box.bad("prepare", p, "--out", box.path / "d", "-q", needles=[str(p), needle], leaves=False)
    assert not (box.path / "d").exists()


@pytest.mark.parametrize("name, array", [("empty", np.zeros((0, 1, 16, 16), np.uint8)),
                                         ("nan", np.full((8, 1, 16, 16), np.nan, np.float32))])
def test_train_on_degenerate_raw_arrays_writes_nothing(name, array, box):
    p = box.path / f"{name}.npy"
    np.save(p, array)
    box.bad(*train_args(p, box.path / "run"), needles=[str(p)])


# ================================================================ options

# A negative --seed is a valid noise seed (eval.seed: any integer, docs/recipes.md); a non-integer is not.
EVAL_CASES = [
    (["--t", "nan"], "--t"), (["--t=-1"], "--t"), (["--t", "inf"], "--t"),
    (["--psnr", "nan"], "--psnr"), (["--psnr=-inf"], "--psnr"), (["--psnr", "inf"], "--psnr"),
    (["--t-max=-1"], "--t-max"), (["--t-max", "nan"], "--t-max"), (["--t-max", "0"], "--t-max"),
    (["--t-min", "nan"], "--t-min"), (["--t-min=-1"], "--t-min"),
    (["--n-images", "0"], "--n-images"), (["--n-images=-1"], "--n-images"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size=-3"], "--batch-size"),
    (["--n-images", "abc"], "--n-images"), (["--bogus"], "--bogus"),
    (["--seed", "1.5"], "--seed"), (["--rtol", "nan"], "--rtol"), (["--draws", "0"], "--draws"),
    (["--device", "tpu"], "tpu"), (["--device", "cuda:x"], "cuda:x"),
    (["--weights", "best"], "--weights"), (["--estimator", "magic"], "--estimator"),
]


@pytest.mark.parametrize("args, needle", EVAL_CASES, ids=[" ".join(a) for a, _ in EVAL_CASES])
def test_eval_nll_option_values(args, needle, box, model):
    box.bad("eval-nll", model, "--no-baseline", *args, needles=[needle])


def test_device_cuda_without_a_gpu(box, model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    box.bad("eval-nll", model, "--device", "cuda", needles=["--device", "cuda"])


@pytest.mark.parametrize("cmd", ["sample", "dimension"])
def test_other_commands_check_the_device(cmd, box, model):
    extra = ["--n", "2", "--out", box.path / "s"] if cmd == "sample" else []
    box.bad(cmd, model, "--device", "tpu", *extra, needles=["tpu"])


@pytest.mark.parametrize("args, needle", [
    (["--n", "0"], "--n"), (["--n=-2"], "--n"), (["--seeds", "5-1"], "--seeds"), (["--n", "2", "--steps", "0"], "--steps"),
    (["--n", "2", "--t-max", "nan"], "--t-max"), (["--n", "2", "--t-min=-1"], "--t-min"),
    (["--n", "2", "--step-scale", "inf"], "--step-scale"), (["--n", "2", "--sampler", "magic"], "--sampler"),
])
def test_sample_option_values(args, needle, box, model):
    box.bad("sample", model, *args, "--out", box.path / "s", "-q", needles=[needle])


@pytest.mark.parametrize("args, needle", [
    (["--t-grid", "nan:1:3"], "--t-grid"), (["--t-grid", "1e-3:1:0"], "--t-grid"), (["--draws", "0"], "--draws"),
    (["--n-images", "0"], "--n-images"), (["--images", "x"], "--images"),
])
def test_dimension_option_values(args, needle, box, model):
    box.bad("dimension", model, *args, needles=[needle])


def test_generalize_n_zero_leaves_no_out(box, data):
    out = box.path / "gen"
    box.bad("generalize", RECIPE, "--n", "0", "--out", out, "--set", f"data.source={data}", needles=["--n"])
    assert not out.exists()


def test_generalize_n_too_large_leaves_no_out(box, data):
    out = box.path / "gen"
    box.bad("generalize", RECIPE, "--n", "1000000", "--out", out, "--set", f"data.source={data}", needles=["1000000"])
    assert not out.exists()


# ================================================================ unbounded sizes (under a memory limit)

def test_sample_seed_range_of_a_trillion(box, model):
    box.bad("sample", model, "--seeds", "0-1000000000000", "--out", box.path / "s", mem=MEM_LIMIT,
            needles=["--seeds"])


def test_dimension_t_grid_of_a_hundred_million(box, model):
    box.bad("dimension", model, "--t-grid", "1e-3:1:100000000", mem=MEM_LIMIT, needles=["--t-grid"])


@pytest.mark.parametrize("dry", [False, True])
@pytest.mark.parametrize("setting, key", [("train.batch_size=1000000000000", "train.batch_size"),
                                          ("model.widths=[100000]", "model.widths"),
                                          ("eval.batch_size=1000000000000", "eval.batch_size")])
def test_sizes_beyond_memory_are_refused_with_the_estimate(setting, key, dry, box, data):
    out = box.path / "run"
    args = train_args(data, out, "--set", setting) + (["--dry-run"] if dry else [])
    box.bad(*args, mem=MEM_LIMIT, needles=[key, "GiB"])
    assert not out.exists()


def test_steps_as_a_400_digit_integer_writes_nothing(box, data):
    out = box.path / "run"
    box.bad(*train_args(data, out, "--set", "train.steps=" + "9" * 400), needles=["train.steps"])
    assert not out.exists()


BOMB = "\n".join(["data:", "  synthetic:", "    a: &a [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"    {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)])


def test_yaml_alias_bomb_in_a_recipe(box):
    p = box.path / "bomb.yaml"
    p.write_text(BOMB + "\n")
    box.bad("train", p, "--dry-run", mem=MEM_LIMIT, needles=[str(p), "alias"])


def test_yaml_alias_bomb_in_a_set_value(box):
    value = "{a: &a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)) + "}"
    box.bad("train", RECIPE, "--set", f"data.synthetic={value}", "--dry-run", mem=MEM_LIMIT,
            needles=["--set", "alias"])


# ================================================================ recipe YAML edge cases

@pytest.mark.parametrize("text, needles", [
    ("train:\n  seed: 2024-01-01\n", ["train.seed"]),
    ("data:\n  source: !!binary aGVsbG8=\n", ["data.source"]),
    ("data:\n  synthetic: {when: 2024-01-01}\n", ["data.synthetic"]),
    ("train:\n  steps: 10\ntrain:\n  steps: 20\n", ["duplicate", "train"]),
    ("train:\n  steps: 10\n  steps: 20\n", ["duplicate", "steps"]),
    ("optim:\n  lr: 1.0e+38\n", ["optim.lr"]),
    ("optim:\n  eps: 1.0e+300\n", ["optim.eps"]),
    ("train:\n  max_nonfinite: 1.0e+300\n", ["train.max_nonfinite"]),
    ("noise:\n  t_max: 1.0e+300\n", ["noise.t_max"]),
    ("- a\n- b\n", ["mapping"]),
    ("data: !!python/object/apply:os.system ['true']\n", ["yaml"]),
])
def test_recipe_yaml_edge_cases(text, needles, box):
    p = box.path / "r.yaml"
    p.write_text(text)
    box.bad("train", p, "--dry-run", "--shape", "1,16,16", needles=[str(p), *needles])


def test_recipe_nested_20000_levels(box):
    p = box.path / "deep.yaml"
    p.write_text("data:\n  synthetic: {a: " + "[" * 20000 + "]" * 20000 + "}\n")
    box.bad("train", p, "--dry-run", sub=True, needles=[str(p), "deep"])


def test_recipe_that_is_not_utf8(box):
    p = box.path / "latin1.yaml"
    p.write_bytes("train:\n  steps: 10  # \u00e9t\u00e9\n".encode("latin-1"))
    box.bad("train", p, "--dry-run", needles=[str(p), "UTF-8"])


def test_recipe_that_is_a_directory(box):
    (box.path / "dir.yaml").mkdir()
    box.bad("train", box.path / "dir.yaml", "--dry-run", needles=["dir.yaml"])


def test_lr_1e38_training_is_refused_before_writing(box, data):
    out = box.path / "run"
    box.bad(*train_args(data, out, "--set", "optim.lr=1e38"), needles=["optim.lr"])
    assert not out.exists()


# ================================================================ leftovers, interrupted writes, atomicity

def test_prepare_force_killed_between_renames_restores_the_old_copy(box, data):
    parent = box.path / "p"
    parent.mkdir()
    old = copy(data, parent / ".d.old-999999999")
    r = box.cli("prepare", "--verify", parent / "d")
    assert r.code == 0, r.err
    assert (parent / "d" / "manifest.json").is_file() and not old.exists()
    assert "restored" in r.err


def test_prepare_force_killed_between_renames_installs_the_finished_new_copy(box, data):
    parent = box.path / "p"
    parent.mkdir()
    copy(data, parent / ".d.old-999999999")
    src = npz(box.path / "new.npz", train=np.full((6, 1, 8, 8), 3, np.uint8))
    # the new copy was complete (manifest written) when the kill came: make one exactly as prepare would
    r = box.cli("prepare", src, "--out", box.path / "tmpd", "-q")
    assert r.code == 0, r.err
    (box.path / "tmpd").rename(parent / ".d.partial")
    r = box.cli("prepare", src, "--out", parent / "d", "--force", "-q")
    assert r.code == 0, r.err
    assert json.loads((parent / "d" / "manifest.json").read_text())["splits"]["train"]["n"] == 6
    assert sorted(p.name for p in parent.iterdir() if p.name != ".d.lock") == ["d"]


def test_prepare_cleans_a_stale_partial_of_another_request(box):
    parent = box.path / "p"
    (parent / ".d.partial").mkdir(parents=True)
    (parent / ".d.partial" / "progress.json").write_text("{not json")
    r = box.cli("prepare", npz(box.path / "a.npz", train=np.ones((3, 1, 8, 8), np.uint8)), "--out", parent / "d", "-q")
    assert r.code == 0, r.err
    assert sorted(p.name for p in parent.iterdir() if p.name != ".d.lock") == ["d"]


def test_stale_temporary_files_of_killed_writes_are_cleaned_on_the_next_run(box, run, data):
    """A kill during export or the `latest` update leaves .NAME.tmp-PID files; the next train removes them."""
    r = copy(run, box.path / "r")
    dead = 999999999
    stale = [r / f".model.safetensors.tmp-{dead}.safetensors", r / "checkpoints" / f".latest.tmp-{dead}",
             r / "checkpoints" / ".step-0000006.tmp"]
    stale[0].write_bytes(b"half")
    stale[1].write_text("step-00")
    stale[2].mkdir()
    res = box.cli(*train_args(data, r))
    assert res.code == 0, res.err
    assert not any(p.exists() for p in stale)


def test_sample_cleans_stale_temporary_files_in_its_out(box, model):
    out = box.path / "s"
    out.mkdir()
    stale = out / ".samples.npz.tmp-999999999.npz"
    stale.write_bytes(b"x")
    r = box.cli("sample", model, "--n", "2", "--steps", "2", "--solver", "euler", "--out", out, "-q")
    assert r.code == 0, r.err
    assert not stale.exists()


@pytest.mark.parametrize("args, needle", [
    (["--set", "data.source=/no/such/data"], "/no/such/data"),
    (["--set", "train.batch_size=3", "--set", "model.widths=[4,8,16,32,64]"], "model.widths"),
    (["--resume", "/no/such/ckpt"], "/no/such/ckpt"),
])
def test_failed_train_leaves_no_run_directory(args, needle, box, data):
    out = box.path / "run"
    box.bad(*train_args(data, out, *args), needles=[needle])
    assert not out.exists()


# ================================================================ the error boundary itself

CRASH = ("import pathlib, runpy, sys\n"
         "def boom(*a, **k):\n    raise ZeroDivisionError('planted bug')\n"
         "pathlib.Path.is_file = boom\n"
         "sys.argv = ['dsmctl'] + sys.argv[1:]\n"
         "runpy.run_module('dsmctl', run_name='__main__', alter_sys=True)\n")


def test_unexpected_error_is_one_line_without_debug(box):
    r = subprocess.run([sys.executable, "-c", CRASH, "eval-nll", "x.safetensors"], cwd=box.path, env=box.env,
                       capture_output=True, text=True, timeout=300)
    res = Result(r.returncode, r.stdout, r.stderr)
    line = one_line(res, 1, ["ZeroDivisionError", "planted bug", "--debug", "DSMCTL_DEBUG=1"])
    assert "internal error" in line


@pytest.mark.parametrize("how", ["env", "flag"])
def test_unexpected_error_keeps_its_traceback_with_debug(how, box):
    args = ["--debug", "eval-nll", "x.safetensors"] if how == "flag" else ["eval-nll", "x.safetensors"]
    env = {**box.env, **({"DSMCTL_DEBUG": "1"} if how == "env" else {})}
    r = subprocess.run([sys.executable, "-c", CRASH, *args], cwd=box.path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "Traceback" in r.stderr and "ZeroDivisionError: planted bug" in r.stderr


@pytest.mark.parametrize("args, needles", [
    (["train", "nope.yaml"], ["nope.yaml"]),
    (["eval-nll", "missing.safetensors"], ["missing.safetensors"]),
    (["prepare", "demo"], ["--out"]),
    (["sample", "x"], ["--out"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_real_exit_codes_in_a_subprocess(args, needles, box):
    box.bad(*args, sub=True, needles=needles)


# ================================================================ the non-finite guard, as documented

@pytest.mark.slow
def test_non_finite_guard_wording_holds(box, data):
    """docs/training.md: skipped steps never reach the weights, so every checkpoint written holds finite
    weights; past train.max_nonfinite the run stops with exit 3 and writes nothing further. lr 1e30 makes the
    first Adam update ~1e30 per weight, so the next steps' loss terms overflow: there are always skipped steps to
    check (asserted, never skipped)."""
    from safetensors.numpy import load_file

    r = box.path / "r"
    res = box.cli(*train_args(data, r, "--set", "optim.lr=1e30", "--set", "optim.schedule=constant",
                              "--set", "train.steps=6"))
    assert res.code == 0, res.err
    assert json.loads((r / "summary.json").read_text())["skipped_steps"] >= 1, "no non-finite step: nothing checked"
    checkpoints = sorted((r / "checkpoints").glob("step-*"))
    assert checkpoints and (r / "model.safetensors").is_file()
    for ck in checkpoints:
        assert all(np.isfinite(v).all() for v in load_file(str(ck / "model.safetensors")).values()), ck
    r2 = box.path / "r2"
    res = box.cli(*train_args(data, r2, "--set", "optim.lr=1e30", "--set", "optim.schedule=constant",
                              "--set", "train.steps=6", "--set", "train.max_nonfinite=0"))
    assert res.code == 3, f"expected the run to stop at its first non-finite step (exit 3): {res.err}"
    line = [ln for ln in res.err.strip().splitlines() if ln.startswith("error:")]
    assert res.code == 3 and len(line) == 1 and "Traceback" not in res.err, res.err
    bad_step = int(line[0].split("step ")[1].split(":")[0])
    assert all(int(p.name.split("-")[1]) < bad_step for p in (r2 / "checkpoints").glob("step-*"))
