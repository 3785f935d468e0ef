"""Out-of-distribution scores from an energy at every noise level: features.py (per-image statistics of U),
detector.py (a Gaussian fitted to them, saved as safetensors), metrics.py (AUROC, AUPR, FPR at 95 % TPR),
sets.py (reference and outlier sets, built-in shifts), run.py (the whole `dsmctl score` protocol)."""
