"""Training errors and the documented exit codes of `dsmctl train` (see docs/training.md)."""

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # recipe, data, checkpoint or launch problem found before or while starting
EXIT_DIVERGED = 3  # too many non-finite steps; the last checkpoint is intact
EXIT_SIGINT = 130  # stopped by SIGINT (Ctrl-C) after saving a checkpoint at a step boundary
EXIT_SIGTERM = 143  # stopped by SIGTERM (scheduler preemption) after saving a checkpoint


class TrainError(RuntimeError):
    """A one-line, user-facing training problem (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class DivergedError(TrainError):
    """Non-finite losses or gradients beyond train.max_nonfinite skipped steps."""

    exit_code = EXIT_DIVERGED
