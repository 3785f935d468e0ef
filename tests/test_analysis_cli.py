"""The analysis commands end to end on a tiny model: outputs exist, are keyed by index, errors are one line."""
import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from dsmctl.cli import app
from dsmctl.recipe import load_recipe

TINY = {"data": {"source": "demo"},
        "model": {"widths": [4, 8], "mid_width": 8, "layers_per_block": 2, "embedding": "logt"},
        "noise": {"t_min": 1e-4, "t_max": 10.0},
        "optim": {"lr": 1e-3, "schedule": "constant"},
        "train": {"steps": 3, "batch_size": 8, "log_every": 1, "ckpt_every": 100},
        "eval": {"t_max": 10.0, "anchor": "gaussian", "n_images": 24, "batch_size": 24}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from dsmctl.engine.trainer import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(load_recipe(raw=TINY), run, progress=False)
    torch.set_num_threads(n)
    return run


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_eval_nll_estimators_and_outputs(tiny_run, tmp_path):
    per_image = tmp_path / "pi.csv"
    r = invoke("eval-nll", tiny_run, "--estimator", "pf-ode", "--n-images", "4", "--rtol", "1e-3", "--atol", "1e-3",
               "--per-image", per_image, "--plots", tmp_path / "figs", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["estimator"] == "pf-ode" and doc["nll"]["n_images"] == 4
    assert doc["nll"]["divergence"] == "hutchinson" and doc["nll"]["nfe_mean"] > 6
    assert "one_shot" in doc and doc["one_shot"]["quantization_bits"] == 8
    rows = list(csv.DictReader(open(per_image)))
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3] and "nfe" in rows[0] and "status" in rows[0]
    assert (tmp_path / "figs" / "log_p_histogram.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "log_p_strip.png").stat().st_size > 1000

    r = invoke("eval-nll", tiny_run, "--estimator", "dequantized", "--draws", "2", "--n-images", "8", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["nll"]["draws"] == 2 and len(doc["nll"]["draw_means_bits_per_dim"]) == 2
    assert doc["baseline"]["draws"] == 2  # the baseline goes through the same estimator
    # The bound and the plug-in differ only by the dequantization noise: same ballpark for a smooth model.
    assert abs(doc["nll"]["bits_per_dim"] - doc["one_shot"]["bits_per_dim"]) < 1.0


def test_eval_nll_denoising_curve(tiny_run, tmp_path):
    r = invoke("eval-nll", tiny_run, "--n-images", "8", "--denoising-curve", "--denoiser", tiny_run,
               "--psnr-grid", "10,30", "--plots", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    curves = json.loads(r.stdout)["denoising"]["curves"]
    assert len(curves) == 2 and all(len(c) == 2 for c in curves.values())
    a, b = curves.values()
    assert a[0]["psnr_out"] == pytest.approx(b[0]["psnr_out"])  # same model, same keyed noise
    assert (tmp_path / "denoising.png").is_file()


def test_eval_nll_consistency(tiny_run):
    r = invoke("eval-nll", tiny_run, "--n-images", "8", "--consistency", "--draws", "1", "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["consistency"]
    assert [row["t"] for row in c["rows"]] == pytest.approx([1e-4 * 10 ** (k / 4) for k in range(21)])
    assert all(row["t_residual_stderr"] > 0 for row in c["rows"]) and c["stderr"] > 0
    assert "Stein" in c["protocol"] and "8 images" in c["protocol"]
    assert "PF-ODE − one-shot predicted" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--estimator", "bogus"], "--estimator"),
    (["--estimator", "dequantized", "--t", "0.1"], "t = 0"),
    (["--estimator", "pf-ode", "--rtol", "0"], "--rtol"),
    (["--denoising-curve", "--psnr-grid", "a,b"], "--psnr-grid"),
])
def test_eval_nll_bad_options_are_one_line_errors(tiny_run, args, message, capsys):
    from dsmctl.cli import main
    import sys

    argv = sys.argv
    sys.argv = ["dsmctl", "eval-nll", str(tiny_run), *args]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = argv
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dimension_command(tiny_run, tmp_path):
    out, png = tmp_path / "deff.jsonl", tmp_path / "deff.png"
    r = invoke("dimension", tiny_run, "--t-grid", "1e-3:1:4", "--draws", "3", "--n-images", "5", "--out", out,
               "--plot", png, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc["dataset_mean"]) == 4 and doc["d"] == 256
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == 20 and {"index", "t", "d_eff", "d_eff_stderr", "log_p_db_per_dim"} <= set(rows[0])
    assert png.stat().st_size > 1000


def test_generalize_trains_once_and_reuses(tmp_path):
    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "steps": 2}}))
    out = tmp_path / "gen"
    args = ["generalize", recipe, "--n", "5", "--out", out, "--n-eval", "10", "-q", "--json"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [row["n"] for row in doc["rows"]] == [5]
    row = doc["rows"][0]
    assert row["subsets"] == ["first:5", "last:5"] and row["subset_A"]["n_images"] == 5
    assert row["test"]["n_images"] == 10
    # The two models were trained on different images: their log p differ image by image.
    assert row["test"]["delta_rms"] > 0 and isinstance(row["memorizes_a"], bool)
    for name in ("N5-a", "N5-b"):
        assert (out / name / "model.safetensors").is_file()
    for name in ("generalization.json", "generalization.txt", "per_image.csv", "scatter.png", "summary.png"):
        assert (out / name).is_file()
    stamp = (out / "N5-a" / "model.safetensors").stat().st_mtime_ns
    r = invoke(*args)
    assert r.exit_code == 0 and "reusing" in r.output
    assert (out / "N5-a" / "model.safetensors").stat().st_mtime_ns == stamp
    # The same directory with another recipe is refused rather than silently mixed.
    r = invoke("generalize", recipe, "--n", "5", "--out", out, "--steps", "3", "-q")
    assert r.exit_code != 0
    # Two existing checkpoints.
    r = invoke("generalize", "--models", out / "N5-a", "--models", out / "N5-b", "--n-eval", "10", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][0]["subsets"] == ["first:5", "last:5"]
