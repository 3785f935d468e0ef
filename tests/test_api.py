"""The public Python API (dsmctl.load / open_data / Model) gives the CLI's numbers, and the README example runs."""
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import dsmctl
from dsmctl.cli import app

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """recipes/quickstart.yaml, shrunk to seconds: a model file with its stored constant."""
    from dsmctl.engine.trainer import train
    from dsmctl.recipe import load_recipe

    raw = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    raw["model"].update(widths=[4, 8], mid_width=8)
    raw["train"].update(steps=4, batch_size=8, log_every=1, ckpt_every=4)
    raw["eval"].update(n_images=48, batch_size=48)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "quickstart"
    train(load_recipe(raw=raw), out, progress=False)
    torch.set_num_threads(n)
    return out


@pytest.fixture(scope="module")
def shifted(run, tmp_path_factory):
    """The same model file with its stored constant moved by 40 nats: with the Gaussian base the trained c is
    ~1e-4 nats, too small to see whether log_prob uses it at all; this one cannot be missed."""
    from dsmctl.nn.model_file import load_model, save_model

    net, meta = load_model(run)
    meta["normalization"]["constant"] += 40.0
    path = tmp_path_factory.mktemp("shifted") / "model.safetensors"
    save_model(path, net, meta)
    return path


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def close(a, b, rel=1e-6):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.all(np.abs(a - b) <= rel * np.maximum(np.abs(b), 1e-12))


def test_import_is_cheap_and_has_no_cli_stack():
    import subprocess
    import sys

    code = "import sys, dsmctl; print(sorted(m for m in ('torch', 'typer', 'rich', 'accelerate') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_log_prob_and_bits_per_dim_equal_eval_nll_stored_constant(shifted, tmp_path):
    run = shifted
    per_image, bound_file = tmp_path / "logp.csv", tmp_path / "bound.csv"
    doc = json.loads(cli("eval-nll", run, "--stored-constant", "--n-images", 40, "--per-image", per_image,
                         "--estimator", "one-shot", "--json").stdout)
    bound_doc = json.loads(cli("eval-nll", run, "--stored-constant", "--n-images", 40, "--per-image", bound_file,
                               "--json").stdout)
    rows, bound_rows = list(csv.DictReader(open(per_image))), list(csv.DictReader(open(bound_file)))
    m = dsmctl.load(run)
    data = dsmctl.open_data("demo", split="test")
    x = data[:40]
    assert [int(r["index"]) for r in rows] == data.indices()[:40].tolist()
    log_p, bpd = m.log_prob(x), m.bits_per_dim(x, protocol="plug-in")
    assert close(-log_p, [float(r["energy"]) for r in rows])
    assert close(bpd, [float(r["bits_per_dim"]) for r in rows])
    n = doc["nll"]
    assert n["quantization_bits"] == 8 and m.constant == n["constant"] == m.meta["normalization"]["constant"]
    assert abs(m.constant) > 39
    assert close(bpd.mean(), n["bits_per_dim"]) and close(-log_p.mean() / m.d, n["nats_per_dim"])
    # The default on 8-bit images is the bound, as eval-nll's default, image by image (keyed by dataset index).
    assert bound_doc["estimator"] == "dequantized" and bound_doc["nll"]["is_bound"]
    bound = m.bits_per_dim(dsmctl.open_data("demo", split="test", n=40))
    assert close(bound, [float(r["bits_per_dim"]) for r in bound_rows])
    assert close(bound.mean(), bound_doc["nll"]["bits_per_dim"]) and not close(bound, bpd)
    assert close(bound_doc["one_shot"]["bits_per_dim"], bpd.mean())
    # An Images view and a uint8 tensor are read the same way (k/255, +8 for 8-bit data).
    assert close(m.bits_per_dim(dsmctl.open_data("demo", split="test", n=40), protocol="plug-in"), bpd)
    assert close(m.bits_per_dim((x * 255).round().to(torch.uint8), protocol="plug-in"), bpd)
    assert close(m.bits_per_dim(x, quantization_bits=None), bpd - 8)
    # The energy is U alone: log p = -(U + c).
    assert close(-(m.energy(x) + m.constant), log_p)


def test_log_prob_at_t_is_the_noisy_density_eval_nll_reports(shifted, tmp_path):
    run = shifted
    from dsmctl.nll.likelihood import NOISE_STREAM
    from dsmctl.rng import indexed_normal

    per_image = tmp_path / "logp.jsonl"
    doc = json.loads(cli("eval-nll", run, "--stored-constant", "--t", 0.01, "--n-images", 12, "--per-image",
                         per_image, "--json").stdout)
    rows = [json.loads(line) for line in open(per_image)]
    m = dsmctl.load(run)
    x = dsmctl.open_data("demo", split="test")[:12]
    y = x + math.sqrt(0.01) * indexed_normal(np.arange(12), m.shape, doc["nll"]["seed"], NOISE_STREAM)
    assert close(-m.log_prob(y, t=0.01), [r["energy"] for r in rows])
    assert close(m.bits_per_dim(y, t=0.01), [r["bits_per_dim"] for r in rows])  # continuous density: no +8
    assert close(m.bits_per_dim(y, t=0.01).mean(), doc["nll"]["bits_per_dim"])


def test_denoise_is_tweedie(run):
    m = dsmctl.load(run)
    y = dsmctl.open_data("demo", split="test")[:3]
    y = y.clone().requires_grad_(True)
    u = m.net(y, 0.05, need=("energy",), create_graph=True).energy  # the energy alone, differentiated here
    (g,) = torch.autograd.grad(u.sum(), y)
    assert torch.allclose(m.denoise(y.detach(), 0.05), (y - 0.05 * g).detach(), atol=1e-5)
    assert m.denoise(y.detach()[0], 0.05).shape == m.shape  # one image in, one image out


def test_sample_equals_dsmctl_sample(run, tmp_path):
    m = dsmctl.load(run)
    cli("sample", run, "--n", 3, "--out", tmp_path / "a", "--quiet", "--json")
    assert torch.equal(m.sample(3, seed=0), npz_images(tmp_path / "a" / "samples.npz"))
    cli("sample", run, "--seeds", "5,9", "--sampler", "sde", "--steps", 6, "--out", tmp_path / "b", "--quiet")
    assert torch.equal(m.sample(seeds=[5, 9], sampler="sde", steps=6), npz_images(tmp_path / "b" / "samples.npz"))
    assert not torch.equal(m.sample(2, seed=5, sampler="sde", steps=6), m.sample(2, seed=6, sampler="sde", steps=6))


def npz_images(path):
    """samples.npz stores 8-bit images as uint8 N x H x W x C."""
    return torch.from_numpy(np.load(path)["arr_0"]).permute(0, 3, 1, 2).float() / 255


def readme_python_example():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_prints_the_cli_numbers(shifted, tmp_path, monkeypatch):
    """The README example, run as written (its print calls recorded), prints what the CLI and the formulas give:
    log p of the 16 patches = -(eval-nll --stored-constant's per-image energy), their mean bits/dim = eval-nll's,
    log p_t of the noisy patches = -(U(y, t) + c) and the denoiser's error computed here from U, 8-bit samples of
    the printed shape, and the stored normalization. The model's constant is moved by 40 nats (fixture
    `shifted`), so an example that drops the constant cannot pass."""
    import reference

    code = readme_python_example()
    assert 'dsmctl.load("runs/quickstart")' in code
    run = tmp_path / "runs" / "quickstart"
    run.mkdir(parents=True)
    (run / "model.safetensors").symlink_to(shifted)
    per_image = tmp_path / "logp.csv"
    doc = json.loads(cli("eval-nll", run, "--stored-constant", "--n-images", 16, "--per-image", per_image,
                         "--estimator", "one-shot", "--json").stdout)
    bound_doc = json.loads(cli("eval-nll", run, "--stored-constant", "--n-images", 16, "--json").stdout)
    printed = []
    monkeypatch.chdir(tmp_path)
    names = {"__name__": "__main__", "print": lambda *values: printed.append(values)}
    exec(compile(code, "README.md (Python API)", "exec"), names)

    (log_p,), (bpd,), (log_p_t,), (mse,), (shape, norm) = printed
    bpd = float(bpd)
    energies = [float(r["energy"]) for r in csv.DictReader(open(per_image))]
    assert len(energies) == 16 and close(-log_p, energies)
    assert close(bpd, bound_doc["nll"]["bits_per_dim"]) and bound_doc["nll"]["is_bound"]  # the default: the bound
    m, x, y = names["m"], names["x"], names["y"]
    c = doc["nll"]["constant"]
    assert abs(c) > 39 and close(-log_p_t, reference.energy(m.net, y, 0.01) + c)
    yy = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m.net(yy, 0.01, need=("energy",), create_graph=True).energy.sum(), yy)
    assert close(mse, ((y - 0.01 * grad) - x).square().mean(), 1e-4)  # Tweedie from U itself
    assert tuple(shape) == (4, 1, 16, 16)
    samples = names["samples"]  # (that they are dsmctl sample's images: test_sample_equals_dsmctl_sample)
    assert torch.equal(samples, (samples * 255).round() / 255) and 0 <= samples.min() <= samples.max() <= 1
    assert norm["constant"] == c and norm["anchor"] == doc["nll"]["anchor"]


def test_docs_api_example_runs_as_written(run, tmp_path, monkeypatch, capsys):
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quickstart").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("call,names", [
    (lambda m: dsmctl.load("/nonexistent/run"), "/nonexistent/run"),
    (lambda m: dsmctl.load(m.path, weights="bogus"), "weights='bogus'"),
    (lambda m: dsmctl.load(m.path, device="bogus"), "device='bogus'"),
    (lambda m: dsmctl.load(3), "path=3"),
    (lambda m: dsmctl.open_data("demo", split=3), "split=3"),
    (lambda m: dsmctl.open_data("demo", n=0), "n=0"),
    (lambda m: m.log_prob(torch.zeros(2, 3, 8, 8)), "x: images of shape (3, 8, 8)"),
    (lambda m: m.log_prob([[0.5]]), "x: expected a tensor"),
    (lambda m: m.log_prob(torch.full((2, *m.shape), math.nan)), "x: contains NaN"),
    (lambda m: m.log_prob(torch.zeros(2, *m.shape), t=-1.0), "t=-1.0"),
    (lambda m: m.log_prob(torch.zeros(2, *m.shape), t=math.nan), "t=nan"),
    (lambda m: m.log_prob(torch.zeros(2, *m.shape), batch_size=0), "batch_size=0"),
    (lambda m: m.bits_per_dim(torch.zeros(2, *m.shape), quantization_bits="x"), "quantization_bits='x'"),
    (lambda m: m.energy(torch.zeros(0, *m.shape)), "y: images"),
    (lambda m: m.denoise(torch.zeros(2, *m.shape), t="a"), "t='a'"),
    (lambda m: m.sample(0), "n=0"),
    (lambda m: m.sample(2, seeds=[1, 2]), "not both"),
    (lambda m: m.sample(seeds=[-1]), "seeds"),
    (lambda m: m.sample(2, sampler="bogus"), "sampler='bogus'"),
    # the sampler options go through dsmctl sample's request (sample/request.py): the same limits as the CLI
    (lambda m: m.sample(2, steps=0), "steps=0: expected an integer in 1..10,000,000"),
    (lambda m: m.sample(2, sampler="ascent", max_iters=0), "max_iters=0: expected an integer in 1..10,000,000"),
    (lambda m: m.sample(2, langevin_steps=1.5), "langevin_steps=1.5"),
    (lambda m: m.sample(2, seed=-1), "seed=-1"),
    (lambda m: m.sample(2, bogus=1), "bogus"),
])
def test_bad_arguments_raise_one_line_value_errors(run, call, names):
    m = dsmctl.load(run)
    with pytest.raises(ValueError) as e:
        call(m)
    message = str(e.value)
    assert names in message and "\n" not in message


def test_log_prob_needs_a_stored_constant(run, tmp_path):
    from dsmctl.nn.model_file import load_model, save_model

    net, meta = load_model(run)
    meta.pop("normalization")
    save_model(tmp_path / "model.safetensors", net, meta)
    m = dsmctl.load(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no stored normalization constant"):
        m.log_prob(torch.zeros(1, *m.shape))
    assert m.energy(torch.zeros(1, *m.shape)).shape == (1,)  # the raw energy needs no constant


@pytest.fixture(scope="module")
def denoiser_run(tmp_path_factory):
    """The quickstart recipe shrunk to seconds, trained as a denoiser (a score network: no energy)."""
    from dsmctl.engine.trainer import train
    from dsmctl.recipe import load_recipe

    raw = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    raw["model"].update(kind="denoiser", base="none", widths=[4, 8], mid_width=8)
    raw["loss"].update(mode="single")
    raw["noise"].update(t_min=1e-6)
    raw["train"].update(steps=4, batch_size=8, log_every=1, ckpt_every=4)
    raw["eval"].update(n_images=48, batch_size=48)
    out = tmp_path_factory.mktemp("runs") / "denoiser"
    train(load_recipe(raw=raw), out, progress=False)
    return out


def test_denoiser_bits_per_dim_is_eval_nll_dequantized_pf_ode(denoiser_run, tmp_path):
    """A denoiser's bits_per_dim defaults to its dequantized PF-ODE (eval-nll's default for it, a bound), per image
    equal to eval-nll's; 8-bit float images on the grid give the same as the Images view; no energy protocols."""
    per_image = tmp_path / "pf.csv"
    fast = ("--rtol", "1e-3", "--atol", "1e-3")
    doc = json.loads(cli("eval-nll", denoiser_run, "--n-images", 3, *fast, "--no-baseline", "--per-image", per_image,
                         "--json").stdout)
    assert doc["estimator"] == "pf-ode" and doc["nll"]["dequantized"] is True
    cli_bits = [float(r["bits_per_dim"]) for r in csv.DictReader(open(per_image))]
    m = dsmctl.load(denoiser_run)
    x = dsmctl.open_data("demo", split="test", n=3)
    bits = m.bits_per_dim(x, rtol=1e-3, atol=1e-3)
    # the same computation: equal to float64 print precision (dequantizing moves these values by ~1e-5 relative)
    assert close(bits, cli_bits, rel=1e-12), (bits, cli_bits)
    assert close(m.bits_per_dim(x[:3], rtol=1e-3, atol=1e-3, protocol="pf-ode"), cli_bits, rel=1e-12)
    assert close(np.mean(bits.numpy()), doc["nll"]["bits_per_dim"], rel=1e-12)
    with pytest.raises(ValueError, match="no energy"):
        m.bits_per_dim(x, protocol="bound")
    with pytest.raises(ValueError, match="probes=-1"):
        m.bits_per_dim(x, probes=-1)


def test_training_data_missing_here_is_one_line_naming_who_needed_it(denoiser_run, tmp_path):
    """A model file moved to a machine without its training data: the 'auto' quantization and the PF-ODE's
    prior say what needed the data and how to do without it; prior_data= does without it."""
    from dsmctl.nn.model_file import load_model, save_model

    net, meta = load_model(denoiser_run)
    meta["recipe"]["data"]["source"] = str(tmp_path / "gone")
    save_model(tmp_path / "model.safetensors", net, meta)
    m = dsmctl.load(tmp_path / "model.safetensors")
    x = dsmctl.open_data("demo", split="test", n=2)
    with pytest.raises(ValueError, match=r"quantization_bits='auto': the model's training data .*gone.*"
                                         r"pass quantization_bits=8 or None") as e:
        m.bits_per_dim(x[:2])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"protocol='pf-ode' \(its prior's fit\).*pass prior_data="):
        m.bits_per_dim(x, rtol=1e-3, atol=1e-3)
    bits = m.bits_per_dim(x, rtol=1e-3, atol=1e-3, prior_data="demo")
    assert close(bits, dsmctl.load(denoiser_run).bits_per_dim(x, rtol=1e-3, atol=1e-3), rel=1e-12)
