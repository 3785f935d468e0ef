"""Progress on stderr for every command (prepare, train, sample): a rich bar on a terminal, plain lines otherwise."""
import sys
import time


class StderrProgress:
    """The stream, the on/off switch and (on a terminal, once start_bar is called) a rich bar; log() prints
    above the bar so messages and the bar do not tear each other."""

    def __init__(self, enabled=True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.bar = None

    def start_bar(self, *columns):
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(*columns, console=Console(file=self.stream, emoji=False, markup=False, highlight=False))
        self.bar.start()
        return self.bar

    def log(self, text):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class FractionProgress(StderrProgress):
    """Fed fractions in [0, 1]: a bar with ETA on a terminal, a plain line every `every_s` seconds otherwise.
    A context manager that yields itself as the callback, or None when disabled."""

    def __init__(self, label, enabled=True, every_s=10.0, stream=None):
        super().__init__(enabled, stream)
        self.label, self.every_s, self.last, self.t0 = label, every_s, 0.0, time.time()
        if self.tty:
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.start_bar(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                           TextColumn("eta"), TimeRemainingColumn())
            self.task = self.bar.add_task(label, total=1000)

    def __enter__(self):
        return self if self.enabled else None

    def __exit__(self, *exc):
        self.close()

    def __call__(self, fraction):
        if self.bar is not None:
            self.bar.update(self.task, completed=int(1000 * fraction))
            return
        now = time.time()
        if now - self.last >= self.every_s or fraction >= 1:
            self.last = now
            eta = (now - self.t0) * (1 - fraction) / fraction if fraction > 0 else float("nan")
            self.log(f"[{self.label}] {100 * fraction:5.1f}%  elapsed {now - self.t0:.0f} s  eta {eta:.0f} s")


class PrepareProgress(StderrProgress):
    """`dsmctl prepare`: one bar per labelled task on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, enabled=True, every_s=10.0, stream=None):
        super().__init__(enabled, stream)
        self.every_s, self.tasks, self.last = every_s, {}, {}
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

            self.start_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())

    def start(self, label, total, done=0):
        if not self.enabled:
            return
        if self.bar is not None:
            if label not in self.tasks:
                self.tasks[label] = self.bar.add_task(label, total=total, completed=done)
        elif done:
            self.log(f"[prepare] {label}: resuming at {done:,}/{total:,}")

    def advance(self, label, done, total):
        if not self.enabled:
            return
        if self.bar is not None:
            self.start(label, total)
            self.bar.update(self.tasks[label], completed=done)
            return
        now = time.time()
        if done >= total or now - self.last.get(label, 0.0) >= self.every_s:
            self.last[label] = now
            print(f"[prepare] {label}: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%)", file=self.stream, flush=True)


def fmt_metrics(m):
    skipped = f"  skipped {m['skipped']}" if m.get("skipped") else ""
    if m["loss"] is None:
        return f"step {m['step']}  every step of this window skipped  lr {m['lr']:.3g}{skipped}"
    return (f"step {m['step']}  loss {m['loss']:.4g} (space {m['space']:.4g}, time {m['time']:.4g})  "
            f"lr {m['lr']:.3g}  {m['img_per_s']:.0f} img/s{skipped}")


def fmt_duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class TrainProgress(StderrProgress):
    """`dsmctl train`: step count, ETA and metrics on a terminal; one plain line every few seconds otherwise."""

    def __init__(self, total, initial=0, enabled=True, every_s=10.0, stream=None):
        super().__init__(enabled, stream)
        self.total, self.every_s, self.last_print = total, every_s, 0.0
        if self.tty:
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

            # Step count and ETA first, so that a narrow terminal truncates the metrics, not them.
            self.start_bar(TextColumn("{task.completed}/{task.total}"), BarColumn(bar_width=16), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("train", total=total, completed=initial, info="")

    def tick(self, step):
        """Every step: moves the bar on a terminal (metrics arrive every train.log_every steps)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def update(self, metrics):
        if not self.enabled:
            return
        if self.bar is not None:
            info = fmt_metrics(metrics).replace(f"step {metrics['step']}  ", "")
            self.bar.update(self.task, completed=metrics["step"], info=info)
            return
        now = time.time()
        if now - self.last_print >= self.every_s or metrics["step"] >= self.total:
            self.last_print = now
            eta = metrics.get("eta_s")
            eta = f"  eta {fmt_duration(eta)}" if eta is not None else ""
            print(f"[train] {fmt_metrics(metrics)}{eta}", file=self.stream, flush=True)
