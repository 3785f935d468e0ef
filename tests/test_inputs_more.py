"""Issue 24, kinds 3, 4, 7 and 8 replayed in variants (tests/test_hostile.py's style and sandbox): bad input is one
line and exit 2, never an internal error; a result no normalized model can give is never printed; the API and the
CLI refuse the same sampling limits with one check; values are never echoed whole; nothing is written first."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import test_hostile as H
from test_hostile import RECIPE, TINY, Box, base_env, subprocess_cli, tree  # noqa: F401

from dsmctl import budget
from dsmctl.nn.model_file import CheckpointError, load_model, save_model
from dsmctl.recipe import load_recipe

SMALL = ["model.widths=[4,8]", "model.mid_width=8", "model.layers_per_block=2"]


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """A prepared 16x16 demo subset and an untrained (freshly built) model with a Gaussian base fitted to it and a
    stored normalization constant, written as training writes one (built in-process: these tests need a model
    file, not a trained one)."""
    from dsmctl import data as data_mod
    from dsmctl.engine.trainer import model_meta
    from dsmctl.nll.likelihood import fit_anchor
    from dsmctl.nn.build import build_model

    top = tmp_path_factory.mktemp("inputs-shared")
    data_mod.prepare("demo", top / "data", limit=64)
    recipe = load_recipe(RECIPE, SMALL + ["model.base=gaussian", f"data.source={top / 'data'}"])
    train = data_mod.open_split(recipe.data.source, recipe.data.train_split)
    torch.manual_seed(0)
    net = build_model(recipe.model, train.shape)
    net.base.set_gaussian(fit_anchor(train, shrink=True))
    with torch.no_grad():
        net.net.out.weight.normal_(0, 1e-2)  # not only the Gaussian: the network's part matters too
    meta = {**model_meta(recipe, train), "step": 0, "weights": "raw",
            "normalization": {"constant": 0.0, "stderr": 0.0, "t_max": recipe.eval.t_max, "anchor": "gaussian"}}
    (top / "run").mkdir()
    save_model(top / "run" / "model.safetensors", net, meta)
    return top


@pytest.fixture
def box(tmp_path, monkeypatch, capsys, shared):
    yield from H.sandbox(tmp_path, monkeypatch, capsys, (H.ROOT, shared))


@pytest.fixture
def data(shared):
    return shared / "data"


@pytest.fixture
def model(shared):
    return shared / "run" / "model.safetensors"


def doctor(src, dst, edit_tensors=None, edit_meta=None):
    """A copy of a model file with its tensors and/or metadata edited (safetensors' torch API: 0-d tensors kept)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), framework="pt") as f:
        md = dict(f.metadata())
    tensors = load_file(str(src))
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        meta = json.loads(md["dsmctl"])
        edit_meta(meta)
        md["dsmctl"] = json.dumps(meta)
    save_file(tensors, str(dst), metadata=md)
    return dst


# ================================================================ kind 3: internal errors where input is bad

@pytest.mark.parametrize("setting, key", [
    (["model.widths=[100000,200000]", "model.mid_width=400000"], "model.widths"),
    (["model.widths=[4,8]", "model.mid_width=3000000"], "model.mid_width 3000000"),
    (["model.kind=radial", "model.base=none", "model.radial_hidden=100000000"], "model.radial_hidden"),
])
def test_model_file_sizes_are_budgeted_before_anything_is_built(setting, key, box, model):
    def edit(meta):
        meta["recipe"] = load_recipe(overrides=setting).to_dict()
        meta["shape"] = [256] if "model.kind=radial" in setting else [1, 16, 16]
        meta.pop("normalization", None)

    bad = doctor(model, box.path / "big.safetensors", edit_meta=edit)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[str(bad), key, "bytes"], leaves=True)
    box.bad("sample", bad, "--n", "2", "--out", box.path / "s", needles=[str(bad), key], leaves=True)
    with pytest.raises(ValueError, match=key.split()[0]):
        load_model(bad)


def test_model_file_sizes_are_budgeted_against_memory(tmp_path, monkeypatch):
    recipe = load_recipe(overrides=SMALL + ["model.base=none"])
    from dsmctl.nn.build import build_model

    path = tmp_path / "m.safetensors"
    save_model(path, build_model(recipe.model, (1, 16, 16)), {"recipe": recipe.to_dict(), "shape": [1, 16, 16]})
    load_model(path)  # fits
    monkeypatch.setattr(budget, "available_memory", lambda device=None: (1000, "test machine"))
    with pytest.raises(budget.BudgetError, match=f"{path}: metadata field 'recipe' \\(model.widths"):
        load_model(path)


def raw_member_npz(path, members):
    """An .npz (a zip) whose members are given as {name: bytes or array}: bytes are stored raw, not as .npy."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, value in members.items():
            if isinstance(value, bytes):
                zf.writestr(name, value)
            else:
                buf = io.BytesIO()
                np.save(buf, value)
                zf.writestr(f"{name}.npy", buf.getvalue())
    return path


@pytest.mark.parametrize("members, culprit", [
    ({"train": b"not an array"}, "[train]"),
    ({"train": np.zeros((4, 1, 8, 8), np.uint8), "validation": b"plain bytes"}, "[validation]"),
    ({"train": np.zeros((4, 1, 8, 8), np.uint8), "train_labels": b"1234"}, "[train_labels]"),
])
def test_npz_member_that_is_not_an_array(members, culprit, box):
    src = raw_member_npz(box.path / "x.npz", members)
    box.bad("prepare", src, "--out", box.path / "out", needles=[str(src) + culprit, "not an array"], leaves=True)
    assert not (box.path / "out").exists()


def test_npz_labels_that_are_not_one_integer_per_item(box):
    src = H.npz(box.path / "x.npz", train=np.zeros((4, 1, 8, 8), np.uint8), train_labels=np.zeros((4, 2)))
    box.bad("prepare", src, "--out", box.path / "out", needles=["train_labels", "one integer label"], leaves=True)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\ufffe"])
def test_control_character_in_a_recipe_names_the_file(char, box):
    p = box.path / "r.yaml"
    p.write_text(RECIPE.read_text().replace("data:", f"data:  # {char}", 1))
    box.bad("train", p, "--dry-run", needles=[str(p), "not valid YAML", "character"], leaves=True)
    box.bad("train", RECIPE, "--set", f"optim.lr=1{char}", "--dry-run", needles=["--set", "character"])


def denoiser_file(path, shape):
    from dsmctl.nn.build import build_model

    recipe = load_recipe(overrides=SMALL + ["model.kind=denoiser", "loss.mode=single", "model.base=none"])
    save_model(path, build_model(recipe.model, shape), {"recipe": recipe.to_dict(), "shape": list(shape)})
    return path


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 32, 32)])
def test_denoiser_of_another_shape_is_refused_before_any_work(shape, box, model):
    den = denoiser_file(box.path / "den.safetensors", shape)
    r = box.bad("eval-nll", model, "--n-images", "4", "--denoiser", den, "--plots", box.path / "figs",
                needles=["--denoiser", str(den), str(shape)], leaves=True)
    assert "(1, 16, 16)" in r.err
    assert not (box.path / "figs").exists()


@pytest.mark.parametrize("preset, param, key", [
    ("gsm1000", "d=-5", "d -5"), ("gsm1000", "d=0", "d 0"), ("gsm1000", "d=1e12", "d '1e12'"),
    ("gsm1000", "d=100000", "d 100000"), ("gsm1000", "n_train=-1", "n_train -1"), ("gsm1000", "n_test=0", "n_test 0"),
    ("gsm1000", "n_train=1000000000", "n_train + n_test"), ("gsm1000", "seed=-1", "seed -1"),
    ("gsm1000", "variances=[-1,2]", "variances[0] -1"), ("gsm1000", "variances=foo", "variances 'foo'"),
    ("gsm1000", "weights=[1]", "weights [1]"), ("gaussian64", "spectrum={scale: -1, exponent: 1}", "spectrum.scale"),
    ("gsm16", "size=-3", "size -3"), ("gsm16", "size=100000", "size 100000"), ("gsm16", "channels=0", "channels 0"),
    ("gsm16", "pixel_std=-1", "pixel_std -1"), ("gsm16", "mean=abc", "mean 'abc'"),
])
def test_synthetic_parameters_refused_with_key_and_range(preset, param, key, box):
    r = box.bad("prepare", f"synthetic:{preset}", "--param", param, "--out", box.path / "out", needles=[key],
                leaves=True)
    assert "expected" in r.err
    assert not (box.path / "out").exists()


def test_synthetic_recipe_parameters_refused_the_same_way(box):
    box.bad("train", RECIPE, "--set", "data.source=synthetic", "--set", "data.synthetic={kind: gsm, d: -4}",
            "--dry-run", needles=["d -4", "expected an integer"])


def test_splits_of_different_shapes_are_refused_at_prepare(box):
    src = H.npz(box.path / "mixed.npz", train=np.zeros((8, 1, 16, 16), np.uint8),
                test=np.zeros((4, 1, 8, 8), np.uint8))
    box.bad("prepare", src, "--out", box.path / "out", needles=["'train'", "(1, 16, 16)", "'test'", "(1, 8, 8)"],
            leaves=True)
    assert not (box.path / "out").exists()
    src = H.npz(box.path / "mixed3.npz", train=np.zeros((8, 1, 16, 16), np.uint8),
                validation=np.zeros((4, 1, 16, 16), np.uint8), test=np.zeros((4, 3, 16, 16), np.uint8))
    box.bad("prepare", src, "--out", box.path / "out", needles=["'test'", "(3, 16, 16)"], leaves=True)
    # the documented ways out: one split, or a common size / colour
    assert box.cli("prepare", src, "--split", "train,validation", "--out", box.path / "ok", "-q").code == 0
    assert box.cli("prepare", src, "--grayscale", "--out", box.path / "ok2", "-q").code == 0


def test_train_checks_the_eval_split_before_training(box, data, monkeypatch):
    """A prepared directory whose eval split differs (an older prepare) or is missing: refused before step 1."""
    out = box.path / "run"
    box.bad(*H.train_args(data, out, "--set", "data.eval_split=nosuch"), needles=["nosuch"])
    assert not out.exists()
    from dsmctl import data as data_mod
    from dsmctl.engine import trainer

    real = data_mod.open_split

    def other_shape(source, split, synthetic=None):
        return real(source, split, synthetic) if split == "train" else type("Eval", (), {"shape": (1, 8, 8)})()

    monkeypatch.setattr(trainer.data_mod, "open_split", other_shape)
    recipe = load_recipe(RECIPE, [f"data.source={data}"])
    with pytest.raises(trainer.TrainError, match=r"data.eval_split 'test' has examples of shape \(1, 8, 8\)"):
        trainer.open_train_data(recipe)


# ================================================================ kind 4: nonsense with exit 0

@pytest.mark.parametrize("key, index, value", [("base.eigvals", 3, -1.0), ("base.eigvals", 0, 0.0),
                                               ("base.eigvals", 255, -1e-30), ("base.floor", None, -0.5)])
def test_gaussian_base_that_is_no_density_is_refused_at_load(key, index, value, box, model):
    def edit(t):
        if index is None:
            t[key].fill_(value)
        else:
            t[key][index] = value

    bad = doctor(model, box.path / "bad.safetensors", edit_tensors=edit)
    box.bad("eval-nll", bad, "--n-images", "4", needles=[str(bad), key], leaves=True)
    import dsmctl

    with pytest.raises(ValueError, match=key):
        dsmctl.load(bad)


@pytest.mark.parametrize("args, needle", [
    (["eval-nll", "{model}", "--t", "1e300"], "--t 1e+300"),
    (["eval-nll", "{model}", "--t", "1.1e12"], "--t 1100000000000.0"),
    (["eval-nll", "{model}", "--t-max", "1e13"], "--t-max"),
    (["eval-nll", "{model}", "--psnr", "-200"], "--psnr"),
    (["dimension", "{model}", "--t-grid", "1e300"], "--t-grid"),
    (["dimension", "{model}", "--t-grid", "1e-3:1e13:3"], "--t-grid"),
    (["dimension", "{model}", "--t-grid", "1e-3,1e20"], "--t-grid"),
    (["generalize", "--models", "{model}", "--models", "{model}", "--t", "1e20", "--out", "g"], "--t"),
    (["sample", "{model}", "--n", "2", "--t-max", "1e20", "--out", "s"], "--t-max"),
    (["train", str(RECIPE), "--set", "noise.t_max=1e13", "--dry-run"], "noise.t_max"),
    (["train", str(RECIPE), "--set", "eval.t=1e13", "--dry-run"], "eval.t"),
])
def test_noise_levels_above_the_documented_bound_are_refused(args, needle, box, model):
    box.bad(*[a.replace("{model}", str(model)) for a in args], needles=[needle, "1e+12"])


def test_api_noise_levels_bounded_by_the_same_check(model):
    import dsmctl

    m = dsmctl.load(model)
    x = torch.full((1, 1, 16, 16), 0.5)
    for t in (1e300, 2e12, math.inf, -1.0):
        with pytest.raises(ValueError, match="1e\\+12"):
            m.log_prob(x, t=t)
    assert math.isfinite(float(m.log_prob(x, t=1e12)))  # the bound itself is a number


@pytest.mark.parametrize("scale", [1e15, -1e15, 1e30])
@pytest.mark.parametrize("stored", [False, True])
def test_nll_no_normalized_model_gives_is_not_printed(scale, stored, box, model):
    def blow_up(t):
        t["net.out.weight"] = t["net.out.weight"] * scale + 1e-3 * abs(scale)

    bad = doctor(model, box.path / "diverged.safetensors", edit_tensors=blow_up)
    r = box.bad("eval-nll", bad, "--n-images", "4", "--per-image", box.path / "p.csv",
                *(["--stored-constant"] if stored else []), needles=[str(bad), "NLL came out"], leaves=True)
    assert "bits/dim" not in r.out and not (box.path / "p.csv").exists()


def test_check_result_refuses_non_finite_and_absurd_numbers():
    from dataclasses import replace

    from dsmctl.nll.evaluate import ResultError, check_result
    from dsmctl.nll.likelihood import NLLResult

    ok = NLLResult(nats_per_dim=1.0, bits_per_dim=9.4, bits_per_dim_stderr=0.1, log_p_db_per_dim=-4.3, t=0.0,
                   t_max=10.0, anchor="paper", constant=1.0, constant_stderr=0.1, n_images=4, d=256,
                   quantization_bits=8, seed=0, data="x", data_fingerprint=None)
    assert check_result(ok, "m") is ok
    assert check_result(replace(ok, bits_per_dim=-1.15), "m")  # negative plug-in NLLs on 8-bit data do happen
    for change in ({"constant": math.nan}, {"nats_per_dim": math.inf}, {"bits_per_dim": math.nan},
                   {"bits_per_dim": -1.3e28}, {"bits_per_dim": 2e4}):
        with pytest.raises(ResultError, match="m: the NLL came out"):
            check_result(replace(ok, **change), "m")


# ================================================================ kind 7: API and CLI share the sampling limits

@pytest.mark.parametrize("api_kwargs, cli_args, needle", [
    ({"n": 2, "steps": 10 ** 9}, ["--n", "2", "--steps", "1000000000"], "steps"),
    ({"n": 2, "steps": 0}, ["--n", "2", "--steps", "0"], "steps"),
    ({"n": 2, "t_max": 1e300}, ["--n", "2", "--t-max", "1e300"], "t"),
    ({"n": 2, "t_min": 5.0, "t_max": 1.0}, ["--n", "2", "--t-min", "5", "--t-max", "1"], "t"),
    ({"n": 2, "h0": 2.0}, ["--n", "2", "--h0", "2"], "h0"),
    ({"n": 2, "beta": 0.0}, ["--n", "2", "--beta", "0"], "beta"),
    ({"n": 2, "max_iters": 10 ** 8}, ["--n", "2", "--max-iters", "100000000"], "iters"),
    ({"n": 2, "langevin_steps": 10 ** 7}, ["--n", "2", "--langevin-steps", "10000000"], "langevin"),
    ({"n": 2, "step_scale": -1.0}, ["--n", "2", "--step-scale", "-1"], "scale"),
    ({"n": 2, "batch_size": 0}, ["--n", "2", "--batch-size", "0"], "batch"),
    ({"n": 10 ** 12}, ["--n", "1000000000000"], "n"),
    ({"n": 0}, ["--n", "0"], "n"),
])
def test_api_and_cli_refuse_the_same_sampling_limits(api_kwargs, cli_args, needle, box, model):
    import dsmctl

    m = dsmctl.load(model)
    with pytest.raises(ValueError) as e:
        m.sample(**api_kwargs)
    api_msg = str(e.value)
    r = box.bad("sample", model, *cli_args, "--out", box.path / "s", needles=[needle])
    cli_msg = H.one_line(r).removeprefix("error: ")
    assert needle in api_msg and "\n" not in api_msg
    # the same check: the messages differ only in how an option is spelled (steps=5 / --steps 5)
    as_cli = re.sub(r"\b([a-z0-9]+(?:_[a-z0-9]+)*)=", lambda g: "--" + g.group(1).replace("_", "-") + " ", api_msg)
    assert as_cli == cli_msg, (api_msg, cli_msg)


@pytest.mark.parametrize("kwargs, needle", [({"n": 2, "seed": -1}, "seed=-1"), ({"seeds": [3, -1]}, "seeds"),
                                            ({"n": 2, "seed": 2 ** 63 - 1}, "seed"), ({"n": True}, "n=True")])
def test_api_refuses_seeds_the_cli_refuses(kwargs, needle, model):
    import dsmctl

    with pytest.raises(ValueError, match=needle):
        dsmctl.load(model).sample(**kwargs)


# ================================================================ kind 8: smaller

@pytest.mark.parametrize("n", [2 ** 70, 10 ** 6, 65])
def test_size_mismatch_names_the_real_sizes(n, box, data):
    d = H.copy(data, box.path / "d")
    H.edit_manifest(d, lambda m: m["splits"]["train"].__setitem__("n", n))
    r = box.bad(*H.train_args(d, box.path / "r"), needles=[str(d / "train.npy"), f"{n:,}"], leaves=True)
    size = os.path.getsize(d / "train.npy")
    assert f"{size:,} bytes" in r.err and f"{size:,}" != r.err.split("make ")[1].split(";")[0]
    assert not (box.path / "r").exists()


def test_bytes_field_mismatch_names_the_manifest(box, data):
    d = H.copy(data, box.path / "d")
    H.edit_manifest(d, lambda m: m["splits"]["test"].__setitem__("bytes", 123))
    box.bad(*H.train_args(d, box.path / "r"), needles=["test.npy", "`bytes` says 123"], leaves=True)


LONG = ",".join(["1"] * 20000)


@pytest.mark.parametrize("args", [
    ["dimension", "{model}", "--t-grid", LONG + ",-1"],
    ["sample", "{model}", "--seeds", LONG, "--out", "s"],
    ["sample", "{model}", "--n", "2", "--sampler", LONG, "--out", "s"],
    ["eval-nll", "{model}", "--psnr-grid", LONG + ",x", "--denoising-curve"],
    ["eval-nll", "{model}", "--split", LONG],
    ["generalize", str(RECIPE), "--n", LONG + ",0", "--out", "g"],
    ["train", str(RECIPE), "--set", f"train.steps=[{LONG}]", "--dry-run"],
    ["train", str(RECIPE), "--set", "data.subset=" + "x" * 50000, "--dry-run"],
])
def test_long_values_are_never_echoed_whole(args, box, model):
    r = box.bad(*[a.replace("{model}", str(model)) for a in args], leaves=True)
    assert len(r.err) < 1000, len(r.err)
    assert "characters)" in r.err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dir"])
def test_recipe_that_is_not_a_regular_file(kind, box):
    if kind == "fifo":
        path = box.path / "r.yaml"
        os.mkfifo(path)
    elif kind == "dir":
        path = box.path / "d.yaml"
        path.mkdir()
    else:
        path = "/dev/zero"
    r = box.bad("train", path, "--dry-run", needles=[str(path)])
    assert "no such" not in r.err
    box.bad("train", box.path / "missing.yaml", "--dry-run", needles=["no such recipe file"])


def idx_gz(path, dims, cut=0, corrupt=False):
    import gzip

    raw = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(math.prod(dims))
    blob = bytearray(gzip.compress(raw))
    if corrupt:
        blob[-5] ^= 0xFF  # the stored CRC32
    path.write_bytes(bytes(blob[:len(blob) - cut]))
    return path


@pytest.mark.parametrize("cut, corrupt", [(8, False), (4, False), (1, False), (20, False), (0, True)])
def test_truncated_or_corrupt_gz_is_refused(cut, corrupt, box):
    root = box.path / "fm"
    root.mkdir()
    idx_gz(root / "train-images-idx3-ubyte.gz", (6, 8, 8), cut, corrupt)
    idx_gz(root / "train-labels-idx1-ubyte.gz", (6,))
    box.bad("prepare", f"fashion-mnist:{root}", "--out", box.path / "out",
            needles=["train-images-idx3-ubyte.gz"], leaves=True)
    assert not (box.path / "out").exists()


def test_plots_with_an_unwritable_home_print_no_warning_and_leave_nothing(box, model):
    blocker = box.path / "file"
    blocker.write_text("")
    tmp = box.path / "tmp"
    tmp.mkdir()
    env = {"HOME": str(blocker / "home"), "TMPDIR": str(tmp), "XDG_CONFIG_HOME": "", "XDG_CACHE_HOME": ""}
    full = {k: v for k, v in {**box.env, **env}.items() if k != "MPLCONFIGDIR" and v != ""}
    r = subprocess.run([sys.executable, "-m", "dsmctl", "eval-nll", str(model), "--n-images", "4", "--plots",
                        str(box.path / "figs")], cwd=box.path, env=full, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "matplotlib" not in r.stderr.lower() and "MPLCONFIGDIR" not in r.stderr, r.stderr
    assert list((box.path / "figs").glob("*.png"))
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("args, needle", [(["--size", "100000"], "one example"), (["--size", "20000"], "GiB"),
                                          (["--size", "8000", "--grayscale"], "GiB")])
def test_prepare_budgets_sizes_before_writing(args, needle, box, monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device=None: (8 << 30, "test machine"))
    from dsmctl.data import writer

    monkeypatch.setattr(writer.shutil, "disk_usage", lambda p: type("U", (), {"free": 10 << 30})())
    box.bad("prepare", "demo", *args, "--out", box.path / "big", needles=[needle])
