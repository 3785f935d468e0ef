"""The data recipes: the ImageNet64 ones match the paper value for value and read a prepared cache."""
from pathlib import Path

import numpy as np
import pytest

from dsmctl import data
from dsmctl.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name,source", [("imagenet64", "data/imagenet64"), ("imagenet64-gray", "data/imagenet64-gray")])
def test_imagenet64_recipes_are_the_papers(name, source):
    r = load_recipe(RECIPES / f"{name}.yaml")
    assert r.data.source == source and r.data.train_split == "train" and r.data.eval_split == "validation"
    assert r.data.hflip is True and r.data.subset is None
    assert (r.model.kind, r.model.widths, r.model.mid_width, r.model.layers_per_block, r.model.embedding) == \
        ("energy", (64, 128, 256), 512, 3, "paper")
    assert (r.noise.t_min, r.noise.t_max) == (1e-9, 1e3)
    assert (r.loss.mode, r.loss.time_weight) == ("dual", 1.0)
    o = r.optim
    assert (o.lr, o.schedule, o.halve_every, o.warmup_steps, o.weight_decay, o.grad_clip) == \
        (5e-4, "halving", 100_000, 0, 0.0, None)
    t = r.train
    assert (t.steps, t.batch_size, t.precision, t.ema) == (1_000_000, 128, "fp32", None)
    assert (r.eval.t, r.eval.t_max, r.eval.anchor, r.eval.n_images) == (0.0, 1e3, "paper", None)


def test_imagenet64_recipe_builds_the_papers_network_on_a_prepared_cache(tmp_path):
    from dsmctl.engine.dryrun import describe
    from dsmctl.nn.build import build_model, count_parameters

    x = np.zeros((4, 3, 64, 64), np.uint8)
    data.write_prepared(tmp_path / "imagenet64", {"train": x, "validation": x})
    r = load_recipe(RECIPES / "imagenet64.yaml", [f"data.source={tmp_path / 'imagenet64'}"])
    assert tuple(describe(r)["shape"]) == (3, 64, 64)
    assert count_parameters(build_model(r.model, (3, 64, 64))) == 8_649_856  # the paper's count


def test_fashion_mnist_recipe_fits_the_native_size(tmp_path):
    from dsmctl.nn.build import build_model

    r = load_recipe(RECIPES / "fashion-mnist.yaml")
    assert r.data.source == "data/fashion-mnist" and r.data.eval_split == "test"
    build_model(r.model, (1, 28, 28))  # 28 is divisible by 2^len(widths): no resize or padding needed


def test_unprepared_recipe_source_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.DataError, match="prepare it first.*dsmctl prepare SOURCE --out data/imagenet64"):
        data.open_split("data/imagenet64", "train")


def test_quickstart_flips_ema_is_the_quickstart_plus_two_keys():
    """The shipped consistency variant (docs/validation.md) differs from the quickstart in exactly flips and EMA."""
    base = load_recipe(RECIPES / "quickstart.yaml").to_dict()
    variant = load_recipe(RECIPES / "quickstart-flips-ema.yaml").to_dict()
    diff = {f"{s}.{k}": (base[s][k], variant[s][k]) for s in base for k in base[s] if base[s][k] != variant[s][k]}
    assert diff == {"data.hflip": (False, True), "train.ema": (None, 0.999)}


# Keys that change what is trained (everything but where the data lives, logging, checkpoint spacing, and how many
# images the stored constant and eval-nll's default use).
NOT_TRAINING = {"data.source", "train.log_every", "train.ckpt_every", "train.keep_last", "eval.n_images"}


@pytest.mark.parametrize("name,run", [("fashion-mnist-gpu", "energy"), ("fashion-mnist-gpu-denoiser", "denoiser")])
def test_gpu_fashion_recipes_are_the_measured_runs(name, run):
    """The shipped GPU variants train exactly what bench/gpu_fashion.sh trained for docs/fashion-mnist.md's numbers
    (the runs' resolved recipes are committed beside their results)."""
    import yaml

    shipped = load_recipe(RECIPES / f"{name}.yaml").to_dict()
    measured = yaml.safe_load((RECIPES.parent / "bench/results/2026-12-04-gpu" / f"train-{run}" / "recipe.yaml").read_text())
    norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    diff = {f"{s}.{k}": (shipped[s][k], measured[s][k]) for s in shipped for k in shipped[s]
            if norm(shipped[s][k]) != norm(measured[s][k]) and f"{s}.{k}" not in NOT_TRAINING}
    assert diff == {}
    assert shipped["data"]["source"] == "data/fashion-mnist"
