"""The error boundary and the checks made before any work (issue 13, part A): one line and exit 2 for bad
input, exit 1 and a --debug hint for a bug; --device resolved once; recipe YAML bounded; sizes refused with
the memory estimate; a train that fails while setting up leaves no run directory. The end-to-end replay of
the issue's cases is tests/pending/hostile_replay.py."""
import errno
import sys

import numpy as np
import pytest
import torch

from dsmctl import budget, cli
from dsmctl.analysis.dimension import parse_t_grid
from dsmctl.commands.common import UsageError, check_writable, need_float, need_int
from dsmctl.device import DeviceError, resolve_device
from dsmctl.engine.dryrun import check_memory
from dsmctl.engine.errors import DivergedError
from dsmctl.engine.guard import check_finite_weights
from dsmctl.nn.build import build_model, count_parameters
from dsmctl.nn.size import model_size
from dsmctl.recipe import RecipeError, load_recipe, read_yaml
from dsmctl.sample.files import count_seeds, parse_seeds, seed_ranges

pytestmark = pytest.mark.usefixtures("one_thread")


def run_main(monkeypatch, capsys, *args, env=None):
    monkeypatch.setattr(sys, "argv", ["dsmctl", *map(str, args)])
    monkeypatch.delenv("DSMCTL_DEBUG", raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr().err


# ---------------------------------------------------------------- the boundary

def test_a_bug_is_one_line_exit_1_naming_the_debug_switches(monkeypatch, capsys):
    def boom(*a, **k):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr("dsmctl.recipe.load_recipe", boom)
    code, err = run_main(monkeypatch, capsys, "train", "x.yaml")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("error: internal error: ZeroDivisionError: planted")
    assert "--debug" in lines[0] and "DSMCTL_DEBUG=1" in lines[0]
    code, err = run_main(monkeypatch, capsys, "train", "x.yaml", env={"DSMCTL_DEBUG": "1"})
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal error")
    code, err = run_main(monkeypatch, capsys, "--debug", "train", "x.yaml")
    assert code == 1 and "Traceback" in err


@pytest.mark.parametrize("exc, code, needles", [
    (OSError(errno.ENOSPC, "No space left on device", "/d/x.npy"), 2, ["/d/x.npy", "no space left"]),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/out"), 2, ["/ro/out", "not writable"]),
    (MemoryError(), 2, ["out of memory"]),
    (ValueError("a.yaml: bad\nsecond line"), 2, ["a.yaml: bad; second line"]),
    (DivergedError("step 3: diverged"), 3, ["step 3"]),
    (KeyError("x"), 1, ["internal error", "KeyError"]),
])
def test_exceptions_map_to_one_line_and_the_documented_code(exc, code, needles):
    got, message = cli.classify(exc)
    assert got == code and "\n" not in message
    for n in needles:
        assert n in message


@pytest.mark.parametrize("args, needle", [(["frobnicate"], "frobnicate"), (["sample", "m"], "--out"),
                                          (["eval-nll", "m", "--n-images", "abc"], "--n-images")])
def test_click_usage_errors_are_one_line(args, needle, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err


# ---------------------------------------------------------------- devices

def test_resolve_device_refuses_devices_this_machine_lacks(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(DeviceError, match="--device"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="cuda:0..cuda:1"):
        resolve_device("cuda:7")


def test_every_caller_resolves_devices_through_resolve_device(monkeypatch):
    """eval-nll's request check, the Python API and training ask device.resolve_device (one rule, one message)."""
    import dsmctl
    from dsmctl.device import training_device
    from dsmctl.nll.evaluate import ESTIMATORS
    from dsmctl.nll.request import EvalRequest, RequestError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RequestError, match=r"--device cuda:2: this machine has 2 CUDA GPUs; expected cuda:0..cuda:1"):
        EvalRequest("m", device="cuda:2").check(ESTIMATORS)
    with pytest.raises(DeviceError, match=r"device='cuda:2': this machine has 2 CUDA GPUs; expected cuda:0..cuda:1"):
        dsmctl.load("no-such-run", device="cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert training_device() == torch.device("cuda", 1)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    assert training_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RequestError, match="no CUDA GPU"):
        EvalRequest("m", device="cuda").check(ESTIMATORS)


# ---------------------------------------------------------------- recipe YAML

def bomb(levels):
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


def test_yaml_alias_expansion_is_bounded_without_expanding():
    assert len(read_yaml(bomb(2))["a1"]) == 10  # a small use of anchors is fine
    with pytest.raises(RecipeError, match="alias expansion too large"):
        read_yaml(bomb(10))  # 10^10 values if expanded


@pytest.mark.parametrize("text, match", [
    ("a: " + "[" * 20000 + "]" * 20000, "nested too deep"),
    ("train:\n  steps: 1\ntrain:\n  steps: 2\n", "train: duplicate key"),
    ("train:\n  steps: 1\n  steps: 2\n", "train.steps: duplicate key"),
    ("train:\n  seed: 2024-01-01\n", "train.seed: .*a date"),
    ("data:\n  source: !!binary aGVsbG8=\n", "data.source: .*binary"),
    ("a: &a [*a]\n", "recursive alias"),
])
def test_yaml_shapes_that_are_refused(text, match):
    with pytest.raises(RecipeError, match=match):
        read_yaml(text)


def test_recipe_numbers_are_bounded(tmp_path):
    with pytest.raises(RecipeError, match="train.steps: expected an integer of magnitude below 2.63, got 9999...9999 "
                                          r"\(400 digits\)"):
        load_recipe(overrides=["train.steps=" + "9" * 400])
    with pytest.raises(RecipeError, match="optim.lr: expected a number of magnitude at most 1e"):
        load_recipe(overrides=["optim.lr=1e38"])
    assert load_recipe(overrides=["optim.lr=1e30"]).optim.lr == 1e30
    p = tmp_path / "latin1.yaml"
    p.write_bytes("train:\n  steps: 10  # \u00e9t\u00e9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=f"{p}: not UTF-8"):
        load_recipe(p)


# ---------------------------------------------------------------- sizes

CONFIGS = [dict(), dict(widths=(4, 8, 16), layers_per_block=3), dict(kind="denoiser", loss_mode="single"),
           dict(base="gaussian"), dict(layers_per_block=4, mid_width=5), dict(kind="radial"),
           dict(kind="radial", radial_depth=0), dict(time_offset="learned"), dict(base="gaussian", time_offset="learned")]


@pytest.mark.parametrize("change", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_model_size_from_the_recipe_matches_the_built_model(change):
    cfg = dict(kind="energy", widths=(8, 16), mid_width=32, layers_per_block=2, embedding="logt", base="none",
               radial_components=2, radial_hidden=16, radial_depth=3)
    cfg.update({k: v for k, v in change.items() if k != "loss_mode"})
    shape = (8,) if cfg["kind"] == "radial" else (3, 16, 8)
    model = build_model(cfg, shape)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if torch.is_tensor(o) else 0))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(torch.zeros(1, *shape), torch.ones(1), need=("grad_y",) if cfg["kind"] == "denoiser" else ("energy",))
    for h in hooks:
        h.remove()
    assert model_size(cfg, shape) == (count_parameters(model), sum(outputs))


@pytest.mark.parametrize("setting, key", [("train.batch_size=1000000000000", "train.batch_size 1000000000000"),
                                          ("model.widths=[100000]", "model.widths [100000]"),
                                          ("eval.batch_size=1000000000000", "eval.batch_size 1000000000000")])
def test_sizes_beyond_memory_are_refused_naming_the_key_and_the_estimate(setting, key, monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device=None: (8 << 30, "test machine"))
    small = ["model.widths=[8,16]", "model.mid_width=16", "model.base=none"]
    check_memory(load_recipe(overrides=small), (1, 16, 16))  # a small recipe passes
    with pytest.raises(budget.BudgetError) as info:
        check_memory(load_recipe(overrides=small + [setting]), (1, 16, 16))
    msg = str(info.value)
    assert msg.startswith(key) and ": needs ~" in msg and "GiB" in msg and "this machine has 8 GiB (test machine)" in msg


def test_seed_ranges_are_counted_without_expanding():
    assert parse_seeds("0-3,10,7-8") == [0, 1, 2, 3, 10, 7, 8]
    assert count_seeds(seed_ranges("0-1000000000000")) == 10 ** 12 + 1
    for bad in ("5-1", "-1", "1,1", "0-5,3", "a", "0-9223372036854775808"):
        with pytest.raises(ValueError, match="--seeds"):
            seed_ranges(bad)


def test_t_grid_is_finite_and_bounded():
    for bad in ("nan:1:3", "1e-3:inf:3", "1e-3:1:0", "nan", "1e-3:1:100000000"):
        with pytest.raises(ValueError, match="--t-grid"):
            parse_t_grid(bad)


# ---------------------------------------------------------------- option checks and output places

def test_option_checks_name_the_option():
    assert need_int(3, "--n") == 3 and need_float(0.5, "--beta", 0, 1) == 0.5
    for call, needle in [(lambda: need_int(0, "--n"), "--n 0"), (lambda: need_float(float("nan"), "--t-max", 0),
                                                                  "--t-max nan"),
                         (lambda: need_float(float("inf"), "--step-scale", 0), "--step-scale inf")]:
        with pytest.raises(UsageError, match=needle):
            call()


def test_check_writable(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_writable(tmp_path / "f" / "out", "--out")
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path, "--plot", kind="file")
    monkeypatch.setattr("os.access", lambda path, mode: False)  # what a read-only place answers (even to root)
    with pytest.raises(UsageError, match=f"--out {tmp_path / 'out'}: not writable"):
        check_writable(tmp_path / "out", "--out")


# ---------------------------------------------------------------- training leaves nothing when set-up fails

def tiny_recipe(data, **more):
    sets = {"data.source": str(data), "model.widths": "[4,8]", "model.mid_width": 8, "model.layers_per_block": 2,
            "model.base": "none", "train.batch_size": 4, "train.steps": 2, "train.ckpt_every": 2,
            "eval.batch_size": 8, **more}
    return load_recipe(overrides=[f"{k}={v}" for k, v in sets.items()])


@pytest.fixture
def small_data(tmp_path):
    p = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    np.savez(p, train=rng.random((8, 1, 8, 8), np.float32), test=rng.random((8, 1, 8, 8), np.float32))
    return p


def test_train_failing_at_set_up_removes_the_run_dir_it_created_only(small_data, tmp_path, monkeypatch):
    from dsmctl.engine import trainer

    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(trainer, "unreached_parameters", oom)  # fails after the run directory was written
    out = tmp_path / "run"
    with pytest.raises(MemoryError):
        trainer.train(tiny_recipe(small_data), out, progress=False)
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(MemoryError):
        trainer.train(tiny_recipe(small_data), out, progress=False)
    assert (out / "mine.txt").read_text() == "keep"  # not created by this call: left as it was


def test_checkpoints_only_hold_finite_weights():
    net = torch.nn.Linear(2, 2)
    check_finite_weights(net, 1, None)
    with torch.no_grad():
        net.bias[0] = float("inf")
    with pytest.raises(DivergedError, match="step 4: non-finite weights \\(bias\\).*step-0000002 is intact"):
        check_finite_weights(net, 4, "step-0000002")
