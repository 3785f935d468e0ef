"""How the training step scales with image size and width: bench/step.py over a grid.

Defaults: sides 16, 32, 64 x width multipliers 0.25, 0.5, 1 of the paper UNet (64/128/256, middle 512),
batch 4, 3 timed steps per model, no peak-memory subprocesses (the deterministic graph memory is still
reported). Any bench/step.py flag given here overrides the default (e.g. --batches 128 --device cuda).

  python bench/scaling.py
  python bench/scaling.py --device cuda --batches 128 --repeats 30
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import step  # noqa: E402

DEFAULTS = ["--sides", "16,32,64", "--width-mults", "0.25,0.5,1", "--batches", "4", "--repeats", "3",
            "--no-memory", "--title", "scaling.py: step time against image size and width"]

if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
    sys.argv = [sys.argv[0], *DEFAULTS, *sys.argv[1:]]  # argparse keeps the last value of a repeated option
    step.main()
