"""eval-nll's options are checked before any work: one `error:` line naming the option, exit 2, the model never opened."""
import os
import sys
from pathlib import Path

import pytest

from dsmctl.nll.evaluate import ESTIMATORS
from dsmctl.nll.request import EvalRequest, RequestError


def run_cli(args, capsys):
    from dsmctl.cli import main

    argv = sys.argv
    sys.argv = ["dsmctl", "eval-nll", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = argv
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def never_evaluates(monkeypatch, tmp_path):
    """A model path that exists, and a load_model that fails the test if eval-nll gets as far as opening it."""
    import dsmctl.nll.evaluate as evaluate  # eval-nll (dsmctl/evaluation.py) loads the model there

    def opened(*args, **kwargs):
        raise AssertionError("eval-nll opened the model: the option was not checked before the work")

    monkeypatch.setattr(evaluate, "load_model", opened)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"not read")
    return model


BAD = [
    (["--t", "nan"], "--t nan"),
    (["--t", "-1"], "--t -1"),
    (["--t=inf"], "--t inf"),
    (["--psnr", "nan"], "--psnr nan: expected a finite PSNR in dB"),
    (["--psnr=-inf"], "--psnr -inf: expected a finite PSNR in dB"),
    (["--psnr=-1e6"], "--psnr"),
    (["--t", "0.1", "--psnr", "30"], "--t or --psnr"),
    (["--t-max=-1"], "--t-max -1"),
    (["--t-max", "nan"], "--t-max nan: expected a positive finite noise variance"),
    (["--t-max", "0"], "--t-max 0"),
    (["--t-min", "nan"], "--t-min nan"),
    (["--t-min", "0"], "--t-min 0"),
    (["--t-min", "10", "--t-max", "1"], "--t-min 10"),
    (["--n-images", "0"], "--n-images 0"),
    (["--n-images=-3"], "--n-images -3"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--batch-size=-1"], "--batch-size -1"),
    (["--rtol", "nan"], "--rtol nan"),
    (["--atol", "0"], "--atol 0"),
    (["--draws", "0"], "--draws 0"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--probes=-1"], "--probes -1"),
    (["--anchor", "bogus"], "--anchor 'bogus'"),
    (["--weights", "bogus"], "--weights 'bogus'"),
    (["--estimator", "bogus"], "--estimator 'bogus'"),
    (["--estimator", "dequantized", "--psnr", "30"], "t = 0"),
    (["--psnr-grid", "1,x"], "--psnr-grid"),
    (["--psnr-grid", "1,nan"], "--psnr-grid"),
    (["--device", "bogus"], "--device 'bogus'"),
    (["--denoiser", "/nonexistent/run"], "--denoiser /nonexistent/run"),
]


@pytest.mark.parametrize("args,names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_one_line_naming_the_option_before_any_work(never_evaluates, args, names, capsys):
    code, err = run_cli([never_evaluates, *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0] and "Traceback" not in err


def test_per_image_to_a_missing_directory_fails_before_evaluating(never_evaluates, tmp_path, capsys):
    target = tmp_path / "no-such-dir" / "logp.csv"
    code, err = run_cli([never_evaluates, "--per-image", target], capsys)
    assert code == 2 and err.strip().splitlines() == [f"error: --per-image {target}: directory {target.parent} does not exist"]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_cli([never_evaluates, "--per-image", blocker / "x.csv"], capsys)
    assert code == 2 and "--per-image" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli([never_evaluates, "--per-image", tmp_path], capsys)  # a directory, not a file name
    assert code == 2 and "is a directory" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux only")
def test_per_image_to_an_unwritable_directory_fails_before_evaluating(never_evaluates, tmp_path, capsys):
    """A directory nobody may create files in, root included (CI runs as root, and chmod does not stop root):
    /proc/self. For other users, also a directory of mode 0500."""
    places = [Path("/proc/self")]
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        places.append(locked)
    try:
        for place in places:
            code, err = run_cli([never_evaluates, "--per-image", place / "x.csv"], capsys)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: --per-image {place / 'x.csv'}: not writable")
    finally:
        if len(places) > 1:
            places[1].chmod(0o700)


def test_good_values_pass_the_check(tmp_path):
    ok = EvalRequest(tmp_path, t=0.0, t_max=10.0, t_min=1e-4, n_images=1, batch_size=1, per_image=tmp_path / "x.csv",
                     estimator="pf-ode", probes=0, psnr_grid="10, 20")
    assert ok.check(ESTIMATORS) is ok
    assert EvalRequest(tmp_path, psnr=30.0).check(ESTIMATORS).noise_t == pytest.approx(1e-3)
    with pytest.raises(RequestError):  # a ValueError: the CLI prints it as `error: ...`, exit 2
        EvalRequest(tmp_path, batch_size=True).check(ESTIMATORS)
    assert issubclass(RequestError, ValueError)


def test_resolved_fills_the_recipe_defaults():
    meta = {"recipe": {"eval": {"t": 0.0, "t_max": 10.0, "anchor": "gaussian", "n_images": None, "batch_size": 500,
                                "seed": 0},
                       "data": {"source": "demo", "train_split": "train", "eval_split": "test"},
                       "noise": {"t_min": 1e-9}}}
    r = EvalRequest("m", psnr=20.0, seed=3).resolved(meta)
    assert (r.t, r.psnr, r.t_max, r.anchor, r.batch_size, r.seed, r.t_min) == (pytest.approx(0.01), None, 10.0,
                                                                                "gaussian", 500, 3, 1e-9)
    assert (r.source, r.split, r.train_split) == ("demo", "test", "train")
    r = EvalRequest("m", t_max=2.0, anchor="paper", batch_size=7, split="train", source="other").resolved(meta)
    assert (r.t, r.t_max, r.anchor, r.batch_size, r.split, r.source) == (0.0, 2.0, "paper", 7, "train", "other")
