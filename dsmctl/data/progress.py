"""Progress of `dsmctl prepare` on stderr: a rich bar on a terminal, a plain line every few seconds otherwise."""
import sys
import time


class PrepareProgress:
    def __init__(self, enabled=True, every_s=10.0, stream=None):
        self.enabled, self.every_s = enabled, every_s
        self.stream = stream or sys.stderr
        self.bar, self.tasks, self.last = None, {}, {}
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(file=self.stream, emoji=False, markup=False,
                                                                       highlight=False))
            self.bar.start()

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
