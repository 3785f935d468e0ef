"""Memory budgets: what this machine can hold, and a refusal naming the setting and the estimate when a size
(batch, widths, seeds) would not fit. Estimates are made before any work, so nothing is allocated or written."""
import os
import resource


class BudgetError(ValueError):
    """A size that cannot fit in this machine's memory (exit code 2)."""


def gib(nbytes):
    """Bytes as GiB for a message: '24 GiB', '0.5 GiB', '1.2e+09 GiB'."""
    return f"{nbytes / 2 ** 30:.3g} GiB"


def _process_vm_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_memory(device=None):
    """(bytes, description) of the memory the work on `device` (a torch.device or None for the CPU) can use:
    a GPU's total memory, else the physical memory, capped by this process's address-space limit (ulimit -v)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        index = device.index if getattr(device, "index", None) is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return props.total_memory, f"{props.name}, cuda:{index}"
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and (total is None or soft < total):
        return max(0, soft - _process_vm_bytes()), "free under this process's ulimit -v"
    return (total if total is not None else float("inf")), "physical memory"


def need_memory(nbytes, what, device=None, purpose=""):
    """Raise BudgetError("WHAT: needs ~X GiB PURPOSE, this machine has Y GiB (...)") when nbytes do not fit."""
    have, label = available_memory(device)
    if nbytes > have:
        raise BudgetError(f"{what}: needs ~{gib(nbytes)}{' ' + purpose if purpose else ''}, this machine has "
                          f"{gib(have)} ({label}); expected a smaller value")
