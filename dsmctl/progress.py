"""Progress on stderr, shared by prepare and train: a rich bar on a terminal, plain lines otherwise."""
import sys


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
