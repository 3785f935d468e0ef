"""Hugging Face Hub sources when the Hub cannot be reached: fail fast, in one line, saying what to do."""
import os
import socket
import subprocess
import sys
import time
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


def test_unreachable_hub_without_offline_flags_fails_within_30s(tmp_path):
    """A Hub endpoint that accepts connections and never answers: the probe gives up, the offline flags
    are set, and the error is one line pointing to local files."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # never accept(): connections hang like a black-holed network
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "dsmctl", "prepare", "someone/some-dataset", "--out", str(tmp_path / "out")]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    elapsed = time.time() - t0
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0] and "hf:DIR" in lines[0], p.stderr
    # The probe's own wait, not the interpreter's start-up (slow on a loaded machine): the same command with the
    # offline flag set skips the probe, so the difference is what the probe added (its timeout is 5 s + 1 s).
    t0 = time.time()
    subprocess.run(cmd, env=dict(env, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=60)
    assert elapsed - (time.time() - t0) < 15, elapsed


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_flags_skip_the_probe(flag, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert not hf.offline()
    monkeypatch.setenv(flag, "1")
    assert hf.offline()
