"""Progress on stderr, shared by prepare and train: a rich bar on a terminal, plain lines otherwise."""
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
