"""Shared pieces of the benchmarks: device and threads, models and batches, timing, machine info, RESULTS.md.

Benchmarks are scripts, not tests: they print a table and append a section to bench/RESULTS.md with the
machine, versions, date, load and median/min/max over repeats.
"""
import copy
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsmctl.engine.precision import set_fp32_precision  # noqa: E402
from dsmctl.nn.energy import DenoiserModel, EnergyModel  # noqa: E402
from dsmctl.nn.unet import GainNorm, UNet  # noqa: E402
from dsmctl.engine.objectives import sample_t, score_matching_loss  # noqa: E402

RESULTS = Path(os.environ.get("DSMCTL_BENCH_RESULTS") or Path(__file__).with_name("RESULTS.md"))
PAPER = {"widths": (64, 128, 256), "mid": 512, "side": 64, "channels": 3, "batch": 128}


def pick_device(name="auto", threads=1):
    """dsmctl's --device rule (device.resolve_device: 'auto' = cuda if available else cpu). On the CPU, use
    `threads` intra-op threads (recorded in the results).

    One thread is the default on a shared CPU: with several busy processes per core, every parallel region of a
    2-thread op waits at its barrier for a descheduled sibling, which made steps ~5x slower here."""
    from dsmctl.device import DeviceError, resolve_device

    try:
        device = resolve_device(name)
    except DeviceError as e:
        sys.exit(f"error: {e}")
    torch.set_num_threads(threads)
    if device.type == "cuda":
        # fp32 as in the paper and `dsmctl train` (precision fp32): no TF32, whatever cuDNN's default. Through the
        # engine's setter: torch refuses a mix of its legacy allow_tf32 flags and the fp32_precision API.
        set_fp32_precision(False)
        torch.backends.cudnn.benchmark = True
    return device


def make_models(channels=3, widths=PAPER["widths"], mid=PAPER["mid"], layers=3, device="cpu", seed=0,
                channels_last=False, fused=True):
    """An energy model and a denoiser twin with the same UNet architecture and the same initial weights.

    fused=False: the plain-autograd GainNorm + GELU (the reference) instead of nn/fused.py."""
    torch.manual_seed(seed)
    net = UNet(channels, widths, mid, layers)
    for m in net.modules():
        if isinstance(m, GainNorm):
            m.fused = fused
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    energy = EnergyModel(net).to(device, memory_format=fmt)
    denoiser = DenoiserModel(copy.deepcopy(net)).to(device, memory_format=fmt)
    return energy, denoiser


def make_batch(batch, channels, side, device="cpu", seed=0, channels_last=False):
    """x uniform in [0, 1], t log-uniform on the paper's [1e-9, 1e3], z standard normal."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, side, side, generator=g)
    z = torch.randn(batch, channels, side, side, generator=g)
    t = sample_t(batch, 1e-9, 1e3, generator=g)
    if channels_last:
        x, z = x.to(memory_format=torch.channels_last), z.to(memory_format=torch.channels_last)
    return x.to(device), t.to(device), z.to(device)


def train_step(model, mode, x, t, z, optimizer=None):
    """Loss (dual: with the double backward; single: the denoiser's space term), backward, optional Adam step."""
    loss, _ = score_matching_loss(model, x, t, z, mode)
    loss.backward()
    if optimizer is not None:
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return loss


def graph_mib(model, mode, x, t, z):
    """MiB of tensors autograd holds for the backward when the loss is formed (activations, deduplicated by
    storage, weights excluded): deterministic, the same on every device, comparable across code versions."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = score_matching_loss(model, x, t, z, mode)
    model.zero_grad(set_to_none=True)
    del loss
    return sum(seen.values()) / 2**20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def summary(values):
    return statistics.median(values), min(values), max(values)


def fmt_stats(values, scale=1.0, digits=3):
    med, lo, hi = summary([v * scale for v in values])
    return f"{med:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def rss_mib(field="VmRSS"):
    """This process's resident set (VmRSS) or its peak (VmHWM), MiB. VmHWM belongs to the address space, so
    unlike getrusage's ru_maxrss it does not inherit the parent's size across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device):
    """One line for the machine, one for the versions."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        where = f"GPU {p.name} ({p.total_memory / 2**30:.0f} GiB), host {cpu_name()}, {os.cpu_count()} CPUs"
    else:
        where = (f"CPU {cpu_name()}, {os.cpu_count()} CPUs visible, torch intra-op threads "
                 f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    versions = f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    if device.type == "cuda":
        versions += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    return f"{where}; {platform.platform()}", versions


def append_results(title, device, lines, table, note="", load=None):
    """Append a section to bench/RESULTS.md: title, machine, versions, date, load, free lines, a markdown table."""
    where, versions = machine(device)
    out = [f"\n## {title}, {datetime.datetime.now().isoformat(timespec='minutes')}\n",
           f"- machine: {where}", f"- versions: {versions}"]
    if load is not None:
        out.append(f"- load average (1 min) before/after: {load[0]:.1f} / {load[1]:.1f}"
                   + ("" if device.type == "cuda" else f" on {os.cpu_count()} CPUs (other processes share them: "
                      "absolute times are inflated, ratios of interleaved runs are fairer)"))
    out += [f"- {line}" for line in lines]
    if note:
        out.append(f"- note: {note}")
    out += ["", "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table[1:]]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmarks\n")
    RESULTS.write_text(RESULTS.read_text() + "\n".join(out) + "\n")
    print(f"appended to {RESULTS}")


def print_table(table, left=(0,)):
    """Plain-text table; the header and the columns in `left` are left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for j, row in enumerate(table):
        print("  ".join(str(c).ljust(w) if i in left or j == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
