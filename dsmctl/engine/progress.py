"""Training progress on stderr: a rich bar on a terminal, one plain line every few seconds otherwise."""
import time

from ..progress import StderrProgress


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


class Progress(StderrProgress):
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
