"""dsmctl score: detection metrics on hand-computed cases, the detector on closed-form densities, the detector file,
leave-one-class-out selection, bad input refused with one line, and the command end to end on a tiny model."""
import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from typer.testing import CliRunner

from dsmctl import cli
from dsmctl.analysis.ood import metrics
from dsmctl.analysis.ood.detector import Detector
from dsmctl.analysis.ood.features import OOD_STREAM, features, parse_t_grid, parse_transforms
from dsmctl.data.arrays import ArrayData
from dsmctl.nn.densities import Gaussian
from dsmctl.rng import indexed_normal

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- metrics, by hand

def test_metrics_on_hand_computed_cases_with_ties():
    # pairs (out, ref): (1,0) > , (1,1) tie = 1/2, (2,0) >, (2,1) >  -> 3.5 / 4
    assert metrics.auroc([0, 1], [1, 2]) == 0.875
    # thresholds 2: tp 1 fp 0 (P 1, R 1/2); 1: tp 2 fp 1 (P 2/3, R 1) -> 1/2 + 1/2 * 2/3
    assert metrics.aupr([0, 1], [1, 2]) == pytest.approx(5 / 6)
    assert metrics.fpr_at_tpr([0, 1], [1, 2]) == 0.5  # 95 % TPR needs threshold 1, which flags one of two refs
    # all tied: chance, precision = outlier share, everything flagged
    assert metrics.auroc([3, 3, 3], [3]) == 0.5
    assert metrics.aupr([3, 3, 3], [3]) == pytest.approx(0.25)
    assert metrics.fpr_at_tpr([3, 3, 3], [3]) == 1.0
    # separated, and reversed
    assert (metrics.auroc([0, 1], [2, 3]), metrics.aupr([0, 1], [2, 3]), metrics.fpr_at_tpr([0, 1], [2, 3])) == (1, 1, 0)
    assert metrics.auroc([2, 3], [0, 1]) == 0.0
    # 20 outliers: 95 % TPR = 19 of them; the 20th (lowest) is below every ref, so the 19th sets the threshold
    out = np.r_[np.arange(10, 29), -5.0]
    ref = np.arange(0, 20)  # refs >= 10 are flagged at threshold 10: 10 of 20
    assert metrics.fpr_at_tpr(ref, out) == 0.5
    fpr, tpr = metrics.roc_curve([0, 1], [1, 2])
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1]
    with pytest.raises(ValueError, match="at least one"):
        metrics.auroc([], [1])


# ---------------------------------------------------------------- closed-form densities

def test_auroc_of_a_likelihood_ratio_score_is_phi_delta_over_sqrt2():
    """Equal-variance 1-D Gaussians at distance delta: the score x (monotone in the likelihood ratio) has
    AUROC = P(X_out > X_ref) = Phi(delta / sqrt 2)."""
    g = np.random.default_rng(0)
    n, delta = 4000, 1.2
    ref, out = g.standard_normal(n), g.standard_normal(n) + delta
    want = stats.norm.cdf(delta / math.sqrt(2))
    se = math.sqrt(want * (1 - want) * 2 / n)  # Mann-Whitney, upper bound (Hanley & McNeil order)
    assert metrics.auroc(ref, out) == pytest.approx(want, abs=4 * se)


def test_mahalanobis_detector_on_gaussians_matches_the_f_distribution():
    """Fit on N(0, C) in k = 3 dims; outliers N(0, s^2 C). The squared distances are chi2_k and s^2 chi2_k, so
    AUROC = P(s^2 A > B) = P(B/A < s^2) = F_{k,k}(s^2), whatever C (the detector must whiten it)."""
    g = np.random.default_rng(1)
    k, s2, n = 3, 2.0, 3000
    # strongly correlated (after standardizing, correlations ~0.99): a detector that does not whiten sees about
    # one degree of freedom instead of three (AUROC ~ F_{1,1}(2) = 0.61 instead of F_{3,3}(2) = 0.71)
    mix = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.98, 0.1, 0.17]]) * np.array([[1.0], [3.0], [0.2]])
    fit = g.standard_normal((20000, k)) @ mix.T
    ref = g.standard_normal((n, k)) @ mix.T
    out = math.sqrt(s2) * g.standard_normal((n, k)) @ mix.T
    det = Detector.fit(fit, ["nll@0", "grad2@0", "nll@1"])
    got = metrics.auroc(det.score(ref)["multiscale"], det.score(out)["multiscale"])
    want = stats.f.cdf(s2, k, k)
    assert got == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) * 2 / n))


def test_likelihood_feature_of_a_closed_form_density_has_the_f_distribution_auroc():
    """features() on an exact density N(0, I) (d = 4): the t = 0 nll feature is ||x||^2 / (2d) + const, so the plain
    likelihood score separates N(0, s^2 I) from N(0, I) with AUROC F_{4,4}(s^2)."""
    g = torch.Generator().manual_seed(2)
    shape, n, s2 = (1, 2, 2), 1500, 2.5
    model = Gaussian(shape)
    ref = ArrayData(torch.randn(n, *shape, generator=g, dtype=torch.float64).numpy())
    out = ArrayData((math.sqrt(s2) * torch.randn(n, *shape, generator=g, dtype=torch.float64)).numpy())
    fr = features(model, ref, [0.0, 0.5], 0.0, bound_draws=0)
    fo = features(model, out, [0.0, 0.5], 0.0, bound_draws=0)
    assert fr["names"] == ["nll@0", "grad2@0", "tdt@0", "nll@0.5", "grad2@0.5", "tdt@0.5"]
    x = torch.from_numpy(ref.array).flatten(1)
    exact = (0.5 * (x ** 2).sum(1) + 2 * math.log(2 * math.pi)) / 4  # -log N(x; 0, I) / d
    np.testing.assert_allclose(fr["values"][:, 0], exact.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fr["values"][:, 1], np.log((x ** 2).sum(1).numpy() / 4), atol=1e-5)  # float32 batches
    want = stats.f.cdf(s2, 4, 4)
    got = metrics.auroc(fr["nll_bits"], fo["nll_bits"])
    assert got == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) * 2 / n))
    assert fr["bound_bits"] is None and fr["zlib_bits"] is None  # continuous data: no bins, no bytes


def test_orientation_features_of_a_closed_form_density():
    """features() on N(mu, I) with an asymmetric mean: U(y, t) = ||y - mu||^2 / (2 (1 + t)) + const, so the feature
    T@t is (||T y - mu||^2 - ||y - mu||^2) / (2 (1 + t) d), with y = x + sqrt(t) z (z keyed by index)."""
    shape, n = (1, 2, 2), 50
    mu = torch.tensor([[[0.0, 0.3], [1.0, 2.0]]], dtype=torch.float64)
    model = Gaussian(shape, mean=mu)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    f = features(model, ArrayData(x.numpy()), [0.0, 0.5], 0.0, bound_draws=0, transforms=["vflip", "rot90"])
    assert f["names"] == ["nll@0", "grad2@0", "tdt@0", "vflip@0", "rot90@0",
                          "nll@0.5", "grad2@0.5", "tdt@0.5", "vflip@0.5", "rot90@0.5"]
    assert f["forward_passes"] == 2 * 3 and f["transforms"] == ["vflip", "rot90"]
    z = indexed_normal(np.arange(n), shape, 0, OOD_STREAM, torch.float64, torch.device("cpu"))
    for t, col in ((0.0, 3), (0.5, 8)):
        y = x + math.sqrt(t) * z
        for j, turn in enumerate((lambda v: v.flip(-2), lambda v: v.rot90(1, (-2, -1)))):
            want = ((turn(y) - mu).pow(2).sum((1, 2, 3)) - (y - mu).pow(2).sum((1, 2, 3))) / (2 * (1 + t) * 4)
            np.testing.assert_allclose(f["values"][:, col + j], want.numpy(), rtol=1e-5, atol=1e-6)


def test_orientation_score_flags_turned_images_with_the_closed_form_auroc():
    """Inliers x = mu + z, outliers the same law turned upside down, U = ||x - mu||^2 / 2. With a = vflip(mu) - mu the
    vflip feature is (||a||^2 + 2 a.vflip(z)) / (2d) on inliers and minus that on outliers: N(+-m, s^2) with
    m = ||a||^2 / (2d), s = ||a|| / d, so the one-sided orientation score has AUROC Phi(||a|| / sqrt 2)."""
    shape, n, c = (1, 2, 2), 3000, 0.6
    mu = torch.tensor([[[0.0, 0.0], [c, c]]], dtype=torch.float64)  # a = [[c, c], [-c, -c]], ||a|| = 2c
    model = Gaussian(shape, mean=mu)
    g = torch.Generator().manual_seed(5)
    draw = lambda: (mu + torch.randn(n, *shape, generator=g, dtype=torch.float64)).numpy()
    fit, ref, out = draw(), draw(), np.flip(draw(), -2).copy()
    kw = dict(bound_draws=0, transforms=["vflip"])
    ff, fr, fo = (features(model, ArrayData(v), [0.0], 0.0, **kw) for v in (fit, ref, out))
    det = Detector.fit(ff["values"], ff["names"], t_grid=[0.0])
    sr, so = det.score(fr["values"]), det.score(fo["values"])
    want = stats.norm.cdf(2 * c / math.sqrt(2))
    got = metrics.auroc(sr["orientation"], so["orientation"])
    assert got == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) * 2 / n))
    # the likelihood sees less of it: 2 nll is chi2_4 on inliers and noncentral chi2_4(||a||^2) on outliers
    lik = integrate.quad(lambda v: stats.ncx2.sf(v, 4, 4 * c * c) * stats.chi2.pdf(v, 4), 0, np.inf)[0]
    got_lik = metrics.auroc(fr["nll_bits"], fo["nll_bits"])
    assert got_lik == pytest.approx(lik, abs=4 * math.sqrt(lik * (1 - lik) * 2 / n)) and lik < want - 0.1
    assert metrics.auroc(sr["combined"], so["combined"]) > lik
    assert np.std(det.score(ff["values"])["orientation"]) == pytest.approx(1.0)  # unit spread on the fit images


def test_transforms_parsing():
    assert parse_transforms("auto", (1, 8, 8)) == ["vflip"] and parse_transforms("none", (1, 8, 8)) == []
    assert parse_transforms("vflip, rot90,rot270", (3, 8, 8)) == ["vflip", "rot90", "rot270"]
    assert parse_transforms("rot180,hflip", (1, 8, 6)) == ["rot180", "hflip"]
    for text, shape, msg in (("spin", (1, 8, 8), "expected distinct names"), ("vflip,vflip", (1, 8, 8), "distinct"),
                             ("rot90", (1, 8, 6), "quarter turns need square images; these are 8x6")):
        with pytest.raises(ValueError, match=msg):
            parse_transforms(text, shape)


# ---------------------------------------------------------------- the detector file

def test_detector_round_trip_and_tampered_files_refused(tmp_path):
    g = np.random.default_rng(3)
    names = ["nll@0", "grad2@0", "tdt@0", "nll@0.1", "grad2@0.1", "tdt@0.1"]
    v = g.standard_normal((50, 6))
    v[:, 2] = 0.0  # t dU/dt at t = 0: constant, left out
    det = Detector.fit(v, names, t_grid=[0, 0.1], draws=1, bound_draws=0, seed=0, nll_bits_mean=4.0, model={})
    assert det.used.tolist() == [True, True, False, True, True, True]
    path = det.save(tmp_path / "det.safetensors")
    back = Detector.load(path)
    x = g.standard_normal((7, 6))
    for k, s in det.score(x).items():
        np.testing.assert_array_equal(back.score(x)[k], s)
    assert back.meta["t_grid"] == [0, 0.1] and back.meta["n_fit"] == 50
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    raw[-3] ^= 0x55  # a byte of the last tensor's data
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Detector.load(bad)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"4.0", 8, 8 + header_len)  # nll_bits_mean in the metadata: 4.0 -> 5.0
    raw[at] = ord("5")
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        Detector.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable safetensors detector"):
        Detector.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="at least 2"):
        Detector.fit(v[:1], names)


def test_t_grid_parsing():
    assert parse_t_grid("0,1e-3,1") == [0.0, 1e-3, 1.0]
    for bad in ("1,0.1", "-1", "0,0", "a", "", "nan"):
        with pytest.raises(ValueError, match="--t-grid"):
            parse_t_grid(bad)


# ---------------------------------------------------------------- leave-one-class-out selection

def test_exclude_labels_drops_a_class_and_refuses_what_cannot_be_done():
    from dsmctl.data import DataError, exclude_labels
    from dsmctl.recipe import RecipeError, load_recipe

    x = np.zeros((10, 1, 2, 2), np.uint8)
    labels = np.array([0, 1, 2, 1, 0, 2, 1, 0, 2, 1])
    data = ArrayData(x, "lab", "fp", labels=labels)
    kept = exclude_labels(data, [1])
    assert kept.index(np.arange(len(kept))).tolist() == [0, 2, 4, 5, 7, 8]
    view = data.subset(np.arange(5, 10))
    assert exclude_labels(view, [2]).index(np.arange(3)).tolist() == [6, 7, 9]
    assert exclude_labels(data, []) is data
    with pytest.raises(DataError, match="no example"):
        exclude_labels(data, [7])
    with pytest.raises(DataError, match="no labels"):
        exclude_labels(ArrayData(x, "plain"), [1])
    assert load_recipe(raw={"data": {"exclude_labels": [8]}}).data.exclude_labels == (8,)
    with pytest.raises(RecipeError, match="data.exclude_labels"):
        load_recipe(raw={"data": {"exclude_labels": [-1]}})


# ---------------------------------------------------------------- the command end to end

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from dsmctl.engine.trainer import train
    from dsmctl.recipe import load_recipe

    raw = {"data": {"source": "demo"}, "model": {"widths": [4, 8], "mid_width": 8, "layers_per_block": 2,
                                                  "embedding": "logt", "base": "gaussian"},
           "noise": {"t_min": 1e-6, "t_max": 10.0},
           "train": {"steps": 3, "batch_size": 8, "log_every": 1, "ckpt_every": 100},
           "eval": {"t_max": 10.0, "anchor": "gaussian", "n_images": 24, "batch_size": 24}}
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(load_recipe(raw=raw), run, progress=False)
    return run


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["dsmctl", *map(str, args)])
    monkeypatch.delenv("DSMCTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


def test_score_command_end_to_end_and_detector_reuse(tiny_run, tmp_path, monkeypatch, capsys):
    import dsmctl

    out = tmp_path / "ood"
    code, io = run_main(monkeypatch, capsys, "score", tiny_run, "--outliers", "inverted,noise,constant,patches",
                        "--n", "20", "--fit-images", "last:30", "--t-grid", "0,1e-2,1", "--out", out, "--json")
    assert code == 0, io.err
    doc = json.loads(io.out)
    assert set(doc["table"]) == {"inverted", "noise", "constant", "patches"}
    row = doc["table"]["noise"]
    assert {"multiscale", "multiscale_nll", "max_z", "nll", "bound", "typicality", "complexity", "ratio_base"} <= set(row)
    assert row["multiscale"]["n_reference"] == 20 and 0 <= row["multiscale"]["auroc"] <= 1
    # the demo test patches against themselves (resized to their own size): every score at chance
    assert all(v["auroc"] == 0.5 for v in doc["table"]["patches"].values())
    assert {"orientation", "combined"} <= set(row) and doc["headline"] == "combined" and doc["transforms"] == ["vflip"]
    assert doc["cost"]["forward_passes_per_image"] == 3 * 2 + 2  # 3 levels (the copy and its vflip), 2 bound draws
    assert doc["data"]["fit_seen_in_training"] == 30  # the model trained on the whole split: said, not hidden
    assert json.loads((out / "scores.json").read_text())["table"] == doc["table"]
    for f in ("detector.safetensors", "per_image.csv", "roc.png", "histograms.png"):
        assert (out / f).is_file()
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 100 + 30 and rows[0]["set"] == "reference"  # then the fit images, last
    assert [r["set"] for r in rows[100:]] == ["fit"] * 30 and "vflip@0.01" in rows[-1]
    # bench/ood_refit.py refits the same detector from the file alone: the same per-image scores
    from bench.ood_refit import read, refit

    _, again_sc = refit(read(out), ["vflip"])
    for k in ("combined", "orientation", "multiscale"):
        np.testing.assert_allclose(again_sc["noise"][k], [float(r[k]) for r in rows if r["set"] == "noise"], rtol=1e-9)
    _, plain = refit(read(out), [])
    assert "combined" not in plain["reference"]
    np.testing.assert_allclose(plain["reference"]["multiscale"], [float(r["multiscale"]) for r in rows[:20]], rtol=1e-9)
    # reuse: the same detector gives the same per-image scores, through the CLI and the Python API
    per = tmp_path / "again.jsonl"
    code, io = run_main(monkeypatch, capsys, "score", tiny_run, "--detector", out / "detector.safetensors",
                        "--n", "20", "--per-image", per)
    assert code == 0, io.err
    again = [json.loads(line) for line in per.read_text().splitlines()]
    ref_rows = [r for r in rows if r["set"] == "reference"]
    np.testing.assert_allclose([r["multiscale"] for r in again], [float(r["multiscale"]) for r in ref_rows],
                               rtol=1e-9)
    m = dsmctl.load(tiny_run)
    api = m.ood_scores(dsmctl.open_data("demo", "test", n=20), out / "detector.safetensors")
    np.testing.assert_allclose(api["multiscale"], [float(r["multiscale"]) for r in ref_rows], rtol=1e-6)
    np.testing.assert_allclose(api["nll"], [float(r["nll"]) for r in ref_rows], rtol=1e-6)
    np.testing.assert_allclose(api["combined"], [float(r["combined"]) for r in ref_rows], rtol=1e-6)


@pytest.mark.parametrize("args, culprit", [
    (["--outliers", "invertd"], "--outliers invertd: unknown outlier set"),
    (["--outliers", "{other}"], "expected (1, 16, 16)"),
    (["--outliers", "{empty}"], "no images"),
    (["--data", "{labelled}", "--outliers", "class:5"], "[class 5]: no images"),
    (["--fit-images", "first:1"], "1 fit image(s); expected at least 2"),
    (["--t-grid", "1,0.1"], "--t-grid 1,0.1"),
    (["--t-grid", "-1"], "--t-grid -1"),
    (["--detector", "{junk}"], "not a readable safetensors detector"),
    (["--outliers", "class:3"], "has no labels"),
    (["--transforms", "spin"], "--transforms spin: expected distinct names"),
])
def test_bad_input_is_refused_with_one_line(tiny_run, tmp_path, monkeypatch, capsys, args, culprit):
    other, empty, junk = tmp_path / "other.npz", tmp_path / "empty.npz", tmp_path / "junk.safetensors"
    np.savez(other, test=np.zeros((4, 1, 8, 8), np.uint8))
    np.savez(empty, test=np.zeros((0, 1, 16, 16), np.uint8))
    junk.write_bytes(b"junk")
    labelled = tmp_path / "labelled.npz"
    g = np.random.default_rng(0)
    np.savez(labelled, train=g.integers(0, 256, (40, 1, 16, 16), dtype=np.uint8), train_labels=np.arange(40) % 4,
             test=g.integers(0, 256, (20, 1, 16, 16), dtype=np.uint8), test_labels=np.arange(20) % 4)
    args = [a.format(other=other, empty=empty, junk=junk, labelled=labelled) for a in args]
    out = tmp_path / "o"
    code, io = run_main(monkeypatch, capsys, "score", tiny_run, "--n", "4", "--fit-images", "last:8",
                        "--t-grid", "0,1", "--bound-draws", "0", "--out", out, *args)
    lines = io.err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: ") and culprit in lines[-1], io.err
    assert not any(line.startswith("Traceback") for line in lines)
    assert not (out / "scores.json").exists()
