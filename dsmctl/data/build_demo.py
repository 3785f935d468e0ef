"""Rebuild the embedded demo set: python -m dsmctl.data.build_demo (needs the demo-build extra).

16x16 grey patches cut on a non-overlapping grid from CC0 / public-domain photographs bundled with
scikit-image, after a 2x box down-sampling (so a patch holds more structure than sensor noise).
Patches are shuffled with a fixed seed and split into train/test; the output is deterministic.
"""
from pathlib import Path

import numpy as np

# name in skimage.data -> licence as stated in scikit-image's documentation of that image
IMAGES = {
    "camera": "CC0 (Lav Varshney)",
    "astronaut": "public domain (NASA)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "retina": "CC0 1.0",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "clock": "public domain (Stefan van der Walt)",
    "cell": "CC0",
}
PATCH, N_TEST, MAX_PER_IMAGE, SEED = 16, 500, 500, 0


def gray(img):
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    if img.max() <= 1.0:
        img = img * 255
    return img


def patches(img):
    h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
    small = img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    ph, pw = small.shape[0] // PATCH, small.shape[1] // PATCH
    cut = small[:ph * PATCH, :pw * PATCH].reshape(ph, PATCH, pw, PATCH).transpose(0, 2, 1, 3)
    return np.clip(np.round(cut.reshape(-1, PATCH, PATCH)), 0, 255).astype(np.uint8)


def build(out):
    import skimage.data

    rng = np.random.default_rng(SEED)
    all_patches, counts = [], {}
    for name in IMAGES:
        p = patches(gray(getattr(skimage.data, name)()))
        if len(p) > MAX_PER_IMAGE:  # keep large, mostly-dark images (retina, hubble) from dominating
            p = p[np.sort(rng.choice(len(p), MAX_PER_IMAGE, replace=False))]
        counts[name] = len(p)
        all_patches.append(p)
    x = np.concatenate(all_patches)[:, None]
    order = rng.permutation(len(x))
    x = x[order]
    np.savez_compressed(out, train=x[N_TEST:], test=x[:N_TEST])
    return counts, len(x) - N_TEST, N_TEST


if __name__ == "__main__":
    out = Path(__file__).parent / "demo" / "patches.npz"
    counts, n_train, n_test = build(out)
    print(f"wrote {out}: {n_train} train + {n_test} test patches of {PATCH}x{PATCH}; per image: {counts}")
