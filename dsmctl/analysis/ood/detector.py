"""The OOD detector: a Gaussian fitted to the feature vectors of in-distribution images, scored by distance.

Fit: standardize each feature on the fit images, then the Ledoit-Wolf shrunk covariance of the standardized
energy features (well conditioned even with fewer images than features; the transform features are not in it).
Scores (higher = more outlying):
  multiscale      Mahalanobis distance over the energy features (nll@t, grad2@t, tdt@t at every level)
  multiscale_nll  Mahalanobis distance over the nll@t features alone
  orientation     one-sided, from the transform features (vflip@t, rot90@t, ...: U of the turned copy minus U of
                  the copy): minus their mean standardized value, scaled to unit spread on the fit images. A model
                  that learned the data's orientation finds turned copies of its images less probable (features >
                  0); an image whose turned copies are not less probable is one it does not recognize. An image
                  with an unusually *strong* preference is not flagged (no reason to distrust it).
  combined        multiscale and orientation, each standardized on the fit images, summed (when there are
                  transform features)
  max_z           the largest |standardized feature|
Features constant on the fit images (t dU/dt at t = 0) carry no scale and are left out.
Saved as safetensors (tensors + JSON metadata; loading never runs code) with a sha256 over both: a file
changed afterwards is refused.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ...fileio import atomic_path
from ...nn.densities import ledoit_wolf

FORMAT = "dsmctl-ood-detector/1"
SCORES = ("multiscale", "multiscale_nll", "orientation", "combined", "max_z")
ENERGY_KINDS = ("nll", "grad2", "tdt")
TENSORS = ("mean", "std", "cov", "used")


class Detector:
    def __init__(self, mean, std, cov, used, meta):
        self.mean, self.std, self.cov = np.asarray(mean, float), np.asarray(std, float), np.asarray(cov, float)
        self.used = np.asarray(used, bool)
        self.meta = dict(meta)
        self.names = list(self.meta["names"])
        self._prec = {g: np.linalg.inv(self.cov[np.ix_(c, c)]) for g, c in self.groups().items()}

    def groups(self):
        """{score name: the feature columns its Mahalanobis distance uses}; features constant on the fit images
        are left out, and so is a group with no columns."""
        energy = self._columns(lambda k: k in ENERGY_KINDS)
        nll = self._columns(lambda k: k == "nll")
        return {g: c for g, c in {"multiscale": energy, "multiscale_nll": nll}.items() if len(c)}

    def turned(self):
        """Columns of the transform features (kinds not in ENERGY_KINDS) used by the detector."""
        return self._columns(lambda k: k not in ENERGY_KINDS)

    def _columns(self, keep):
        """The used feature columns whose kind (the name before '@') passes keep(kind)."""
        return np.array([c for c in np.flatnonzero(self.used) if keep(self.names[c].partition("@")[0])], dtype=int)

    @classmethod
    def fit(cls, values, names, **meta):
        """values (N, F) of in-distribution images; meta: what produced them (t_grid, draws, seed, model, ...)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(names):
            raise ValueError(f"detector: features of shape {v.shape}; expected (N, {len(names)})")
        if len(v) < 2:
            raise ValueError(f"detector: {len(v)} fit image(s); expected at least 2 (better: more than {len(names)} "
                             "features, e.g. 1,000 held-out training images)")
        if not np.isfinite(v).all():
            raise ValueError("detector: the fit images' features contain NaN or infinite values")
        mean, std = v.mean(0), v.std(0)
        used = std > 1e-12 * (1 + np.abs(mean))
        if not used.any():
            raise ValueError(f"detector: every feature is constant on the {len(v)} fit images; expected varied images")
        std = np.where(used, std, 1.0)
        z = (v - mean) / std
        # the covariance of the energy features alone (the only block a Mahalanobis score reads), so that
        # `multiscale` does not depend on which transform features ride along
        block = used & np.array([n.partition("@")[0] in ENERGY_KINDS for n in names])
        cov, delta = np.eye(len(names)), 0.0
        if block.any():
            shrunk, delta = ledoit_wolf(torch.from_numpy(z[:, block]))
            cov[np.ix_(block, block)] = shrunk.numpy()
        meta = {**meta, "names": list(names), "n_fit": int(len(v)), "shrinkage": float(delta),
                "nll_bits_mean": meta.get("nll_bits_mean")}
        det = cls(mean, std, cov, used, meta)
        raw = det.score(v)
        if "orientation" in raw:  # the spread of the two scores that `combined` adds, on the fit images
            det.meta["calibration"] = {k: [float(raw[k].mean()), float(raw[k].std()) or 1.0]
                                       for k in ("multiscale", "orientation")}
        return det

    def standardized(self, values):
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != len(self.names):
            raise ValueError(f"detector: features of shape {v.shape}; expected (N, {len(self.names)}) ({self.names})")
        return (v - self.mean) / self.std

    def score(self, values):
        """{score name: (N,) array}, higher = more outlying."""
        z = self.standardized(values)
        out = {}
        for g, cols in self.groups().items():
            zc = z[:, cols]
            out[g] = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", zc, self._prec[g], zc), 0))
        turned = self.turned()
        if len(turned):
            out["orientation"] = -z[:, turned].mean(1)
            cal = self.meta.get("calibration")
            if cal:
                out["orientation"] = out["orientation"] / cal["orientation"][1]
                out["combined"] = (out["multiscale"] - cal["multiscale"][0]) / cal["multiscale"][1] + out["orientation"]
        out["max_z"] = np.abs(z[:, self.used]).max(1)
        return out

    # -- file ------------------------------------------------------------------------------------------------
    def _tensors(self):
        return {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std),
                "cov": torch.from_numpy(self.cov), "used": torch.from_numpy(self.used.astype(np.uint8))}

    def save(self, path):
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in self._tensors().items()}
        meta = {**self.meta, "format": FORMAT}
        meta["sha256"] = _digest(tensors, meta)
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata={"dsmctl-ood": json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such detector file; expected one written by `dsmctl score --out`")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("dsmctl-ood")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable safetensors detector ({str(e).splitlines()[0][:100]})") from None
        try:
            meta = json.loads(raw or "")
        except (json.JSONDecodeError, RecursionError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a dsmctl OOD detector (metadata format {FORMAT} missing)")
        if set(tensors) != set(TENSORS) or not isinstance(meta.get("names"), list):
            raise ValueError(f"{path}: detector tensors {sorted(tensors)}; expected {list(TENSORS)} and feature names")
        want = meta.pop("sha256", None)
        if want != _digest(tensors, {**meta, "format": FORMAT}):
            raise ValueError(f"{path}: checksum mismatch: the detector file was changed after it was written; "
                             "refit it (dsmctl score without --detector)")
        f = len(meta["names"])
        shapes = {"mean": (f,), "std": (f,), "cov": (f, f), "used": (f,)}
        for k, s in shapes.items():
            if tuple(tensors[k].shape) != s:
                raise ValueError(f"{path}: tensor {k} of shape {tuple(tensors[k].shape)}; expected {s}")
        t = {k: tensors[k].double().numpy() for k in ("mean", "std", "cov")}
        if not all(np.isfinite(a).all() for a in t.values()) or (t["std"] <= 0).any():
            raise ValueError(f"{path}: non-finite or non-positive statistics; expected a fitted detector")
        try:
            return cls(t["mean"], t["std"], t["cov"], tensors["used"].numpy().astype(bool), meta)
        except np.linalg.LinAlgError:
            raise ValueError(f"{path}: singular covariance; expected a fitted detector") from None


def _digest(tensors, meta):
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def typicality(nll_bits, nll_bits_mean):
    """|NLL - mean NLL of the fit images| (Nalisnick et al. 2019's typicality test, per image)."""
    return np.abs(np.asarray(nll_bits) - nll_bits_mean)

