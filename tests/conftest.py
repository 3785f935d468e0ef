import os
import tempfile

import pytest
import torch

# Keep Hugging Face caches and hub access off the user's home and the network.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="dsmctl-hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """For tests of many tiny ops: extra threads only add synchronization (10-50x slower on a busy machine).
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
