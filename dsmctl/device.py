"""--device NAME -> torch.device, refusing a device this machine does not have (one shared check for every command)."""
import re

import torch


class DeviceError(ValueError):
    """A --device value that names no usable device here (exit code 2)."""


def resolve_device(name="auto", option="--device"):
    """auto (the first GPU when there is one, else cpu) | cpu | cuda | cuda:N | mps."""
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DeviceError(f"{option} {name}: this machine has no CUDA GPU that torch can use; expected cpu or auto")
        index = int(m.group(1) or 0)
        if index >= n:
            raise DeviceError(f"{option} {name}: this machine has {n} CUDA GPU{'s' if n > 1 else ''}; expected "
                              f"cuda:0..cuda:{n - 1}")
        return torch.device("cuda", index)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{option} mps: Apple's Metal backend is not available here; expected cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"{option} {name!r}: expected auto, cpu, cuda, cuda:N or mps")
