"""The paper's learning-rate schedule: lr halved every `optim.halve_every` steps, exact at the boundaries, and the
trainer applies it to the optimizer at every step."""
import json

import pytest
import torch

from dsmctl.engine.schedule import lr_factor
from dsmctl.engine.trainer import train
from dsmctl.recipe import Optim, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_halving_factor_is_exact_at_the_boundaries():
    """The paper: Adam lr 5e-4 halved every 100k steps (the recipe default). Step s (0-based) runs at
    lr * 2^-(s // 100000): the last step of a window keeps the old rate, the first of the next has half of it."""
    opt = Optim()
    assert (opt.schedule, opt.halve_every, opt.lr, opt.warmup_steps) == ("halving", 100_000, 5e-4, 0)
    expected = {0: 1.0, 99_999: 1.0, 100_000: 0.5, 100_001: 0.5, 199_999: 0.5, 200_000: 0.25,
                299_999: 0.25, 300_000: 0.125, 999_999: 2.0 ** -9, 1_000_000: 2.0 ** -10}
    for step, factor in expected.items():
        assert lr_factor(step, opt, 1_000_000) == factor, step
    assert opt.lr * lr_factor(100_000, opt, 1_000_000) == 2.5e-4
    # The schedule does not depend on the run length (only the cosine/onecycle ones do).
    assert lr_factor(150_000, opt, 200_000) == lr_factor(150_000, opt, 10**7) == 0.5


def test_warmup_multiplies_the_halving():
    opt = Optim(halve_every=4, warmup_steps=8)
    assert [lr_factor(s, opt, 100) for s in range(10)] == [1 / 8, 2 / 8, 3 / 8, 4 / 8,  # (s + 1) / 8
                                                           5 / 16, 6 / 16, 7 / 16, 8 / 16,  # x 1/2 from s = 4
                                                           1 / 4, 1 / 4]  # warm (1) x 1/4 from s = 8


def test_trainer_halves_the_optimizer_lr_every_halve_every_steps(tmp_path):
    lr = 1e-3
    recipe = load_recipe(raw={
        "data": {"source": "demo"}, "model": {"widths": [4, 8], "mid_width": 8, "layers_per_block": 2},
        "optim": {"lr": lr, "schedule": "halving", "halve_every": 2},
        "train": {"steps": 5, "batch_size": 4, "log_every": 1, "ckpt_every": 100},
        "eval": {"n_images": 4, "batch_size": 4, "t_max": 10.0}})
    run = tmp_path / "run"
    train(recipe, run, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Row `step` reports the lr of the step that just ran (0-based step - 1).
    assert [(r["step"], r["lr"]) for r in rows] == [(1, lr), (2, lr), (3, lr / 2), (4, lr / 2), (5, lr / 4)]
    state = torch.load(run / "checkpoints" / "step-0000005" / "state.pt", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [lr / 4] * len(state["optimizer"]["param_groups"])
