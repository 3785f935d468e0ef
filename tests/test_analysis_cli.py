"""The analysis commands end to end on tiny models: their numbers equal the formulas evaluated here on the same
keyed noise (tests/reference.py), two different models differ, a model against itself gives exactly 0."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import reference as ref
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


@pytest.fixture(scope="module")
def tiny_run_b(tmp_path_factory):
    """A genuinely different model: the same recipe with another seed."""
    from dsmctl.engine.trainer import train

    run = tmp_path_factory.mktemp("runs") / "tiny-b"
    train(load_recipe(raw={**TINY, "train": {**TINY["train"], "seed": 1}}), run, progress=False)
    return run


def model_of(run):
    from dsmctl.nn.model_file import load_model

    return load_model(run)


def test_eval_nll_estimators_and_outputs(tiny_run, tmp_path):
    """pf-ode and dequantized through the CLI; every number recomputed here from the formulas (tests/reference.py)."""
    model, meta = model_of(tiny_run)
    _, x = ref.images(8)
    d = 256
    per_image = tmp_path / "pi.csv"
    r = invoke("eval-nll", tiny_run, "--estimator", "pf-ode", "--n-images", "4", "--rtol", "1e-3", "--atol", "1e-3",
               "--per-image", per_image, "--plots", tmp_path / "figs", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["estimator"] == "pf-ode" and doc["nll"]["n_images"] == 4
    assert doc["nll"]["divergence"] == "hutchinson" and doc["nll"]["nfe_mean"] > 6
    # The constant is fixed on the 4 evaluated images (gaussian anchor, t_max 10); the one-shot uses it.
    c, c_se = ref.gaussian_anchor_constant(model, x[:4], 10.0)
    one = doc["one_shot"]
    assert one["constant"] == pytest.approx(c, abs=1e-4) and one["constant_stderr"] == pytest.approx(c_se, rel=1e-3)
    assert one["quantization_bits"] == 8
    assert one["bits_per_dim"] == pytest.approx(ref.one_shot_bits(model, x[:4], c).mean().item(), rel=1e-6)
    # The energy at the ODE's start (t_min 1e-4, clean images) with the same constant.
    e0 = ref.energy(model, x[:4], 1e-4).mean().item()
    assert doc["energy_at_t_min"]["bits_per_dim"] == pytest.approx((e0 + c) / (d * ref.LN2) + 8, rel=1e-6)
    # The baseline: a Gaussian fitted to the 2830 training patches, one-shot on the same 4 images.
    gauss = ref.FittedGaussian(ref.images(None, split="train")[1])
    assert doc["baseline"]["bits_per_dim"] == pytest.approx(
        ref.one_shot_bits(gauss, x[:4], 0.0).mean().item(), rel=1e-6)
    # Per-image rows: the summary is their mean, each row's bits/dim its energy in bits (+8), log p in dB/dim.
    rows = list(csv.DictReader(open(per_image)))
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3] and all(r["status"] == "0" for r in rows)
    energies = torch.tensor([float(r["energy"]) for r in rows], dtype=torch.float64)
    assert [float(r["bits_per_dim"]) for r in rows] == pytest.approx((energies / (d * ref.LN2) + 8).tolist(), rel=1e-9)
    assert [float(r["log_p_db_per_dim"]) for r in rows] == pytest.approx(ref.log_p_db(energies, d).tolist(), rel=1e-9)
    assert doc["nll"]["bits_per_dim"] == pytest.approx((energies.mean() / (d * ref.LN2) + 8).item(), rel=1e-9)
    assert doc["nll"]["nfe_mean"] == pytest.approx(sum(float(r["nfe"]) for r in rows) / 4)
    # A shard (--start 2 --n-images 2) reproduces rows 2 and 3 of the full run: indices, probes and steps are the
    # split's, so shards run as separate processes concatenate into the full run's per-image file.
    shard = tmp_path / "shard.csv"
    r = invoke("eval-nll", tiny_run, "--estimator", "pf-ode", "--start", "2", "--n-images", "2", "--rtol", "1e-3",
               "--atol", "1e-3", "--per-image", shard, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["start"] == 2
    shard_rows = list(csv.DictReader(open(shard)))
    assert [int(r["index"]) for r in shard_rows] == [2, 3]
    assert [float(r["energy"]) for r in shard_rows] == pytest.approx(energies[2:].tolist(), rel=1e-5)
    r = invoke("eval-nll", tiny_run, "--start", "500")  # past the end: a RequestError (one line, exit 2 in main())
    assert type(r.exception).__name__ == "RequestError" and "--start 500" in str(r.exception)
    assert "has only 500 images" in str(r.exception)
    assert (tmp_path / "figs" / "log_p_histogram.png").stat().st_size > 1000
    assert (tmp_path / "figs" / "log_p_strip.png").stat().st_size > 1000

    r = invoke("eval-nll", tiny_run, "--estimator", "dequantized", "--draws", "2", "--n-images", "8", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    c, _ = ref.gaussian_anchor_constant(model, x, 10.0)
    assert doc["nll"]["constant"] == pytest.approx(c, abs=1e-4)
    bits = ref.dequantized_bits(model, x, c, draws=2)  # (8 images, 2 draws)
    assert doc["nll"]["bits_per_dim"] == pytest.approx(ref.iw_dequantized_bits(model, x, c, 2).mean().item(), rel=1e-6)
    assert doc["nll"]["jensen_bits_per_dim"] == pytest.approx(bits.mean().item(), rel=1e-6)
    assert doc["nll"]["draw_means_bits_per_dim"] == pytest.approx(bits.mean(0).tolist(), rel=1e-6)
    assert [r["draws"] for r in doc["nll"]["convergence"]] == [1, 2]
    assert doc["nll"]["convergence"][0]["bits_per_dim"] == pytest.approx(bits[:, 0].mean().item(), rel=1e-6)
    assert doc["one_shot"]["bits_per_dim"] == pytest.approx(ref.one_shot_bits(model, x, c).mean().item(), rel=1e-6)
    # The baseline goes through the same estimator (its own dequantization draws).
    assert doc["baseline"]["draws"] == 2
    assert doc["baseline"]["bits_per_dim"] == pytest.approx(ref.iw_dequantized_bits(gauss, x, 0.0, 2).mean().item(),
                                                            rel=1e-6)

    # The dequantized PF-ODE starts from x + u (the bound's first uniform draw) and is paired with the one-shot K = 1
    # bound at the same x + u and t = t_min.
    r = invoke("eval-nll", tiny_run, "--estimator", "pf-ode", "--dequantize", "--n-images", "2", "--rtol", "1e-3",
               "--atol", "1e-3", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    c2, _ = ref.gaussian_anchor_constant(model, x[:2], 10.0)
    assert doc["nll"]["dequantized"] and "upper bound" in doc["protocol"]
    u = (ref.dequantized_bits(model, x[:2], c2, 1)[:, 0] - 8) * d * ref.LN2  # U(x + u, 0) + c, draw 0
    start = ref.energy(model, x[:2] + (ref.indexed_uniform(np.arange(2), x.shape[1:], 0, ref.DEQUANT) - 0.5) / 256,
                       1e-4) + c2
    assert doc["one_shot_dequantized"]["bits_per_dim"] == pytest.approx(
        (start.mean() / (d * ref.LN2) + 8).item(), rel=1e-6)
    assert (start - u).abs().max() > 1e-5  # read at t_min, not at 0
    assert "one-shot bound at the ODE's start" in doc["difference"]["protocol"]


def test_eval_nll_denoising_curve(tiny_run, tiny_run_b, tmp_path):
    """Two different models on the same keyed noise: each curve equals the PSNR recomputed here, and they differ."""
    r = invoke("eval-nll", tiny_run, "--n-images", "8", "--denoising-curve", "--denoiser", tiny_run_b,
               "--psnr-grid", "10,30", "--plots", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    curves = json.loads(r.stdout)["denoising"]["curves"]
    assert len(curves) == 2
    _, x = ref.images(8)
    for run, curve in zip((tiny_run, tiny_run_b), curves.values()):
        model = model_of(run)[0]
        assert [row["psnr_in"] for row in curve] == [10.0, 30.0]
        for row in curve:
            assert row["psnr_out"] == pytest.approx(ref.psnr_out(model, x, row["psnr_in"]), abs=5e-7)
    a, b = curves.values()
    # Barely trained (3 steps), the two differ little: measured 6e-3 dB at 10 dB, 1.6e-5 dB at 30 dB.
    assert all(abs(ra["psnr_out"] - rb["psnr_out"]) > 5e-6 for ra, rb in zip(a, b))
    assert (tmp_path / "denoising.png").is_file()


def test_eval_nll_consistency(tiny_run):
    """The predicted gap is the trapezoid over log t of the rows' t * residual, in bits/dim; the rows equal the
    Stein-form residual of the library on the same 8 images, 21 levels of [t_min, t_max], 1 draw."""
    from dsmctl.nll.consistency import stein_residual

    r = invoke("eval-nll", tiny_run, "--n-images", "8", "--consistency", "--draws", "1", "--json")
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["consistency"]
    ts = [1e-4 * 10 ** (k / 4) for k in range(21)]
    assert [row["t"] for row in c["rows"]] == pytest.approx(ts)
    tr = [row["t_residual"] for row in c["rows"]]
    trapezoid = sum((tr[k] + tr[k + 1]) / 2 * math.log(ts[k + 1] / ts[k]) for k in range(20)) / (256 * ref.LN2)
    assert c["predicted_gap_bits_per_dim"] == pytest.approx(trapezoid, rel=1e-6)
    rows, gap = stein_residual(model_of(tiny_run)[0], ref.images(8)[1], ts, draws=1, seed=0)
    assert tr == pytest.approx([row["t_residual"] for row in rows], rel=1e-5, abs=1e-6)
    assert c["stderr"] == pytest.approx(gap["stderr"], rel=1e-5)
    assert all(row["t_residual_stderr"] > 0 for row in c["rows"])
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
    """d_eff and E_z log p_t per image and t equal the formulas evaluated here on the same keyed draws."""
    out, png = tmp_path / "deff.jsonl", tmp_path / "deff.png"
    r = invoke("dimension", tiny_run, "--t-grid", "1e-3:1:4", "--draws", "3", "--n-images", "5", "--out", out,
               "--plot", png, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["d"] == 256 and doc["t"] == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    rows = [json.loads(line) for line in open(out)]
    assert [(row["index"], row["t"]) for row in rows] == [(i, t) for i in range(5) for t in doc["t"]]
    model, meta = model_of(tiny_run)
    c = meta["normalization"]["constant"]  # the stored constant
    _, x = ref.images(5)
    for j, t in enumerate(doc["t"]):
        deff, u = ref.d_eff(model, x, t, draws=3)
        got = [row for row in rows if row["t"] == t]
        assert [row["d_eff"] for row in got] == pytest.approx(deff.tolist(), rel=1e-4)
        assert [row["log_p_db_per_dim"] for row in got] == pytest.approx(ref.log_p_db(u + c, 256).tolist(), rel=1e-5)
        mean = doc["dataset_mean"][j]
        assert mean["d_eff"] == pytest.approx(deff.mean().item(), rel=1e-4)
        assert mean["log_p_db_per_dim"] == pytest.approx(ref.log_p_db(u.mean() + c, 256).item(), rel=1e-5)
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
    assert "1/2 models trained" in r.output and "min left" in r.output and "2/2 models trained" in r.output  # ETA
    row = doc["rows"][0]
    assert row["subsets"] == ["first:5", "last:5"] and row["subset_A"]["n_images"] == 5
    assert row["test"]["n_images"] == 10
    # Δ = log p_A - log p_B per test image (dB/dim, t = noise.t_min, each model with its stored constant),
    # recomputed here: the two models were trained on different images, so Δ is nonzero and exactly this.
    _, x = ref.images(10)
    lp = {}
    for side in "ab":
        model, meta = model_of(out / f"N5-{side}")
        u = ref.energy(model, x + 1e-2 * ref.indexed_normal(np.arange(10), x.shape[1:], 0, ref.NOISE), 1e-4)
        lp[side] = ref.log_p_db(u + meta["normalization"]["constant"], 256)
    delta = lp["a"] - lp["b"]
    test = row["test"]
    assert test["delta_rms"] == pytest.approx(delta.square().mean().sqrt().item(), rel=1e-5)
    assert test["delta_mean"] == pytest.approx(delta.mean().item(), rel=1e-5, abs=1e-7)
    assert test["delta_abs_mean"] == pytest.approx(delta.abs().mean().item(), rel=1e-5)
    assert test["log_p_a"] == pytest.approx(lp["a"].mean().item(), rel=1e-6)
    assert test["correlation"] == pytest.approx(torch.corrcoef(torch.stack([lp["a"], lp["b"]]))[0, 1].item(), abs=1e-6)
    assert test["delta_rms"] > 1e-4  # measured 8e-4 dB/dim after 2 steps on 5 images each
    per_image = [r for r in csv.DictReader(open(out / "per_image.csv")) if r["set"] == "test"]
    assert [float(r["log_p_a"]) - float(r["log_p_b"]) for r in per_image] == pytest.approx(delta.tolist(), abs=2e-6)
    for name in ("N5-a", "N5-b"):
        assert (out / name / "model.safetensors").is_file()
    for name in ("generalization.json", "generalization.txt", "per_image.csv", "scatter.png", "summary.png"):
        assert (out / name).is_file()
    stamp = (out / "N5-a" / "model.safetensors").stat().st_mtime_ns
    r = invoke(*args)
    assert r.exit_code == 0 and "reusing" in r.output and "models trained" not in r.output
    assert (out / "N5-a" / "model.safetensors").stat().st_mtime_ns == stamp
    # The same directory with another recipe is refused rather than silently mixed.
    r = invoke("generalize", recipe, "--n", "5", "--out", out, "--steps", "3", "-q")
    assert r.exit_code != 0
    # Two existing checkpoints.
    r = invoke("generalize", "--models", out / "N5-a", "--models", out / "N5-b", "--n-eval", "10", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"][0]["subsets"] == ["first:5", "last:5"]
    # The command refuses a model paired with itself (shared training images); the comparison it runs, given one
    # model twice, gives Δ exactly 0 on every set and a correlation of 1.
    r = invoke("generalize", "--models", out / "N5-a", "--models", out / "N5-a", "--n-eval", "10")
    assert r.exit_code != 0 and "share 5 training images" in str(r.exception)  # main() makes it one error: line
    from dsmctl.analysis.generalization import eval_sets, evaluate_pair

    sets = eval_sets("demo", "train", "test", ("first:5", "last:5"), n_eval=10)
    same, _ = evaluate_pair(out / "N5-a" / "model.safetensors", out / "N5-a" / "model.safetensors", sets, 5, t=1e-4)
    for name in ("subset_A", "subset_B", "test"):
        assert same[name]["delta_rms"] == 0.0 and same[name]["delta_mean"] == 0.0 and same[name]["delta_abs_mean"] == 0.0
        assert same[name]["correlation"] == pytest.approx(1.0, abs=1e-12)
    assert same["test"]["log_p_a"] == pytest.approx(test["log_p_a"], rel=1e-12)  # the same numbers as the command's


def test_denoiser_defaults_to_the_dequantized_pf_ode_bound_on_8_bit_images(tmp_path):
    """A denoiser has no energy: eval-nll's default on clean 8-bit images is its PF-ODE from x + u (a bound), not the
    plug-in at the grid point; an explicit --estimator pf-ode keeps the plug-in, labelled as not a bound."""
    from dsmctl.engine.trainer import train

    run = tmp_path / "den"
    raw = {**TINY, "model": {**TINY["model"], "kind": "denoiser"}, "loss": {"mode": "single"}}
    train(load_recipe(raw=raw), run, progress=False)
    fast = ("--n-images", "2", "--rtol", "1e-3", "--atol", "1e-3", "--no-baseline", "--json")
    default = json.loads(invoke("eval-nll", run, *fast).stdout)
    assert default["estimator"] == "pf-ode" and default["nll"]["dequantized"] is True
    assert "upper bound" in default["protocol"]
    plug_in = json.loads(invoke("eval-nll", run, "--estimator", "pf-ode", *fast).stdout)
    assert plug_in["nll"]["dequantized"] is False and "not a bound" in plug_in["protocol"]
    assert plug_in["nll"]["bits_per_dim"] != default["nll"]["bits_per_dim"]
