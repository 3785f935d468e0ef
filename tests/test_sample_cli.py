"""`dsmctl sample` end to end on a tiny untrained network: files, keys, shards, errors."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dsmctl import cli
from dsmctl.nn.model_file import save_model
from dsmctl.nn.build import build_model
from dsmctl.recipe import load_recipe


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    recipe = load_recipe(raw={"model": {"kind": "energy", "widths": [4, 8], "mid_width": 8, "layers_per_block": 2,
                                        "embedding": "logt"}, "noise": {"t_min": 1e-4, "t_max": 10.0}})
    torch.manual_seed(0)
    model = build_model(recipe.model, (1, 16, 16))
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    norm = {"constant": 12.5, "stderr": 0.1, "t_max": 10.0, "anchor": "gaussian", "n_images": 10, "data": "demo:test",
            "seed": 0, "data_fingerprint": None}
    save_model(path, model, {"recipe": recipe.to_dict(), "shape": [1, 16, 16], "step": 3, "normalization": norm})
    return path


def dsmctl(*args, monkeypatch, capsys):
    """Run the CLI's main() in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["dsmctl", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


FAST = ("--steps", "2", "--sampler", "ode", "--solver", "euler", "-q")


def test_sample_writes_pngs_grid_npz_and_json(tiny_ckpt, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s"
    code, stdout, stderr = dsmctl("sample", tiny_ckpt, "--n", 5, "--out", out, "--batch-size", 2, "--json", *FAST,
                                  monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, stderr
    res = json.loads(stdout)
    assert res["n"] == 5 and res["seeds"] == "0-4" and "log_p" in res and "samples" in stderr
    with np.load(out / "samples.npz") as z:
        imgs, seeds = z["arr_0"], z["seeds"]
        assert imgs.dtype == np.uint8 and imgs.shape == (5, 16, 16, 1) and seeds.tolist() == [0, 1, 2, 3, 4]
        assert z["energy"].shape == (5,)
    for s in range(5):
        png = np.asarray(Image.open(out / f"seed-{s:06d}.png"))
        assert np.array_equal(png, imgs[s, ..., 0])
    assert Image.open(out / "grid.png").size[0] >= 256
    assert json.loads((out / "stats.json").read_text())["signature"] == res["signature"]


def test_shards_merge_to_the_single_process_result(tiny_ckpt, tmp_path, monkeypatch, capsys):
    args = ("--seeds", "0-4", "--sampler", "mala", "--steps", "2", "--langevin-steps", "1", "-q")
    assert dsmctl("sample", tiny_ckpt, "--out", tmp_path / "one", *args, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    for rank in (1, 0):
        code, _, err = dsmctl("sample", tiny_ckpt, "--out", tmp_path / "two", "--shard", f"{rank}/2", "--batch-size", 1,
                              *args, monkeypatch=monkeypatch, capsys=capsys)
        assert code == 0, err
    assert not (tmp_path / "two" / "samples.npz").exists()
    code, stdout, err = dsmctl("sample", tiny_ckpt, "--out", tmp_path / "two", "--merge", "--json",
                               monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "MH acceptance" in err and len(json.loads(stdout)["acceptance"]["per_level"]) == 3
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        assert np.array_equal(a["seeds"], b["seeds"])
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1  # float32 batch rounding


def test_torchrun_ranks_write_shards_and_rank0_merges(tiny_ckpt, tmp_path, monkeypatch, capsys):
    """Under torchrun (RANK / WORLD_SIZE set) rank 0 waits for the other shards, then writes the merged files."""
    args = ("sample", tiny_ckpt, "--out", tmp_path / "tr", "--seeds", "0-2", *FAST)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert dsmctl(*args, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    assert not (tmp_path / "tr" / "samples.npz").exists()
    monkeypatch.setenv("RANK", "0")
    code, _, err = dsmctl(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    with np.load(tmp_path / "tr" / "samples.npz") as z:
        assert z["seeds"].tolist() == [0, 1, 2] and z["arr_0"].shape == (3, 16, 16, 1)


@pytest.mark.parametrize("args, message", [
    (("--seeds", "5-2"), "--seeds"),
    (("--n", "3", "--seeds", "0-9"), "--n 3"),
    (("--n", "2", "--sampler", "gibbs"), "sampler 'gibbs'"),
    (("--n", "2", "--shard", "2/2"), "--shard"),
    (("--n", "2", "--t-min", "100"), "t_min"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_ckpt, tmp_path, monkeypatch, capsys, args, message):
    code, _, err = dsmctl("sample", tiny_ckpt, "--out", tmp_path / "x", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_checkpoint_is_reported(tmp_path, monkeypatch, capsys):
    code, _, err = dsmctl("sample", tmp_path / "nope", "--n", 2, "--out", tmp_path / "x",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "nope" in err


def test_sample_request_defaults_are_the_commands_and_the_samplers():
    """SampleRequest (sample/request.py) is what `dsmctl sample` and Model.sample build: its defaults are the
    command's option defaults and SamplerConfig's (init and the noise range come from the model's recipe)."""
    import dataclasses
    import inspect

    from dsmctl.commands.sample import sample as command
    from dsmctl.sample.request import SampleRequest
    from dsmctl.sample.samplers import SamplerConfig

    request = SampleRequest("model")
    options = inspect.signature(command).parameters
    shared = [f.name for f in dataclasses.fields(SampleRequest) if f.name in options and f.name != "out"]
    assert len(shared) == 22  # all but model (the argument ckpt), out (required), rho and python (API only)
    for name in shared:
        assert options[name].default.default == getattr(request, name), name
    for f in dataclasses.fields(SamplerConfig):
        if f.name not in ("steps", "t_max", "t_min", "init"):
            assert getattr(request, f.name) == f.default, f.name
    assert SampleRequest("m", n=3).check().seed_list() == [0, 1, 2]
    assert SampleRequest("m", seeds="4,0-1").check().seed_list() == [4, 0, 1]
