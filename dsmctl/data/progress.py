"""Progress of `dsmctl prepare` on stderr: a rich bar on a terminal, a plain line every few seconds otherwise."""
import time

from ..progress import StderrProgress


class PrepareProgress(StderrProgress):
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
