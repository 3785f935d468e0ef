"""Hugging Face Hub sources when the Hub cannot be reached: fail fast, in one line, saying what to do."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dsmctl.data import hf

ROOT = Path(__file__).resolve().parents[1]


def test_hub_ids_are_told_apart_from_paths(tmp_path):
    assert hf.is_hub_id("benjamin-paine/imagenet-1k-64x64")
    assert hf.is_hub_id("sradc/imagenet_resized_64x64")
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "name").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not hf.is_hub_id("owner/name")  # an existing local folder wins
    finally:
        os.chdir(cwd)
    assert not hf.is_hub_id("a/b/c") and not hf.is_hub_id("/abs/path")


def test_known_imagenet64_variants_are_named():
    assert set(hf.KNOWN) == {"benjamin-paine/imagenet-1k-64x64", "sradc/imagenet_resized_64x64"}
    assert hf.KNOWN["benjamin-paine/imagenet-1k-64x64"]["splits"] == {"train": 1_281_167, "validation": 50_000,
                                                                      "test": 100_000}


def test_unreachable_hub_without_offline_flags_goes_offline(tmp_path, monkeypatch):
    """A Hub endpoint that accepts connections and never answers: the probe gives up, the offline flags are set
    before `datasets` is asked (offline, it fails at once instead of retrying for ~23 s: docs/data.md), and the
    error is one line pointing to local files. Behaviour, not a stopwatch."""
    import datasets
    import huggingface_hub

    # In process first (an instant failure if the flags are not set): when the probe fails, datasets is called
    # with the offline flags already set.
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    real_probe = hf.hub_reachable
    monkeypatch.setattr(hf, "hub_reachable", lambda timeout=5.0: False)
    seen = []

    def load_dataset(*args, **kwargs):
        seen.append((hf.offline(), datasets.config.HF_HUB_OFFLINE))
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(hf.DataError, match="unreachable \\(offline mode\\)"):
        hf._load_hub("someone/some-dataset", None, None, None)
    assert seen == [(True, True)]

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accept(): connections hang like a black-holed network
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "dsmctl", "prepare", "someone/some-dataset", "--out", str(tmp_path / "out")]
    try:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert real_probe(timeout=0.5) is False  # the probe gives up on a silent endpoint
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.close()
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable (offline mode)" in lines[0] and "hf:DIR" in lines[0], p.stderr


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_flags_skip_the_probe(flag, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert not hf.offline()
    monkeypatch.setenv(flag, "1")
    assert hf.offline()
