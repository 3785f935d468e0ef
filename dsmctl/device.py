"""--device NAME -> torch.device, refusing a device this machine does not have (the one device resolution of every
command, eval-nll's request, the Python API and training)."""
import os
import re

import torch


class DeviceError(ValueError):
    """A --device value that names no usable device here (exit code 2)."""


def resolve_device(name="auto", option="--device", label=None):
    """auto (the first GPU when there is one, else cpu) | cpu | cuda | cuda:N | mps.
    Messages name the value as `label` when given (e.g. "device='cuda:3'"), else as "OPTION NAME"."""
    name = "auto" if name is None else str(name).strip().lower()
    said = label or f"{option} {name}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DeviceError(f"{said}: this machine has no CUDA GPU that torch can use; expected cpu or auto")
        index = int(m.group(1) or 0)
        if index >= n:
            raise DeviceError(f"{said}: this machine has {n} CUDA GPU{'s' if n > 1 else ''}; expected "
                              f"cuda:0..cuda:{n - 1}")
        return torch.device("cuda", index)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{said}: Apple's Metal backend is not available here; expected cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"{label or f'{option} {name!r}'}: expected auto, cpu, cuda, cuda:N or mps")


def training_device():
    """The device one training process uses (Accelerate's choice: its local GPU, else the CPU; ACCELERATE_USE_CPU
    keeps it on the CPU)."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")
