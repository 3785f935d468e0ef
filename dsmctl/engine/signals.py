"""SIGTERM / SIGINT: remember the request; the loop saves at the next step boundary and exits.

The first signal only sets a flag (the training step in flight finishes, every rank agrees on the
stop through guard.check, a checkpoint is written, and `dsmctl train` exits with 143 for SIGTERM or
130 for SIGINT). A second signal of the same kind restores the default action and re-raises it, to
get out of a hung run at once.
"""
import os
import signal
import threading

from .errors import EXIT_SIGINT, EXIT_SIGTERM

EXIT_CODES = {signal.SIGTERM: EXIT_SIGTERM, signal.SIGINT: EXIT_SIGINT}


class StopRequest:
    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: do what it would have done without us
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    @property
    def requested(self):
        return self.signum is not None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None

    @property
    def exit_code(self):
        return EXIT_CODES.get(self.signum, 1)
