"""Detection metrics for a score where higher means "more outlying": outliers are the positives.

- AUROC: P(s_out > s_ref) + 1/2 P(s_out = s_ref), the Mann-Whitney U statistic over all pairs (ties count 1/2).
- AUPR: average precision, sum_k (R_k - R_{k-1}) P_k over the distinct thresholds (flag s >= thr) taken from high
  to low; tied scores enter together (no ordering inside a tie).
- FPR at 95 % TPR: the false-positive rate at the highest threshold that flags at least 95 % of the outliers.
"""
import numpy as np


def _clean(ref, out):
    ref, out = np.asarray(ref, dtype=np.float64).ravel(), np.asarray(out, dtype=np.float64).ravel()
    if len(ref) == 0 or len(out) == 0:
        raise ValueError(f"metrics need at least one reference and one outlier score, got {len(ref)} and {len(out)}")
    if not (np.isfinite(ref).all() and np.isfinite(out).all()):
        raise ValueError("metrics: scores contain NaN or infinite values")
    return ref, out


def auroc(ref, out):
    """Mann-Whitney AUROC with mid-ranks (ties count 1/2)."""
    ref, out = _clean(ref, out)
    both = np.concatenate([ref, out])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    # mid-ranks: every member of a tie gets the mean of the ranks it spans (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(both)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + 1 + e)
    r_out = ranks[len(ref):].sum()
    n_out, n_ref = len(out), len(ref)
    return float((r_out - n_out * (n_out + 1) / 2) / (n_out * n_ref))


def _counts(ref, out):
    """(tp, fp) after each distinct threshold, thresholds from high to low (flag score >= threshold)."""
    thr = np.unique(np.concatenate([ref, out]))[::-1]
    s_out, s_ref = np.sort(out), np.sort(ref)
    tp = len(out) - np.searchsorted(s_out, thr, side="left")
    fp = len(ref) - np.searchsorted(s_ref, thr, side="left")
    return thr, tp, fp


def roc_curve(ref, out):
    """(fpr, tpr) from (0, 0) to (1, 1), one point per distinct threshold."""
    ref, out = _clean(ref, out)
    _, tp, fp = _counts(ref, out)
    return np.r_[0.0, fp / len(ref)], np.r_[0.0, tp / len(out)]


def aupr(ref, out):
    """Average precision with the outliers as positives (ties enter together)."""
    ref, out = _clean(ref, out)
    _, tp, fp = _counts(ref, out)
    recall = tp / len(out)
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(ref, out, tpr=0.95):
    """False-positive rate at the highest threshold whose true-positive rate reaches `tpr`."""
    ref, out = _clean(ref, out)
    _, tp, fp = _counts(ref, out)
    k = np.flatnonzero(tp >= tpr * len(out) - 1e-9)[0]
    return float(fp[k] / len(ref))


def summary(ref, out):
    return {"auroc": auroc(ref, out), "aupr": aupr(ref, out), "fpr95": fpr_at_tpr(ref, out),
            "n_reference": int(np.size(ref)), "n_outliers": int(np.size(out))}
