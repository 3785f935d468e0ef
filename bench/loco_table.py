"""Leave-one-class-out table from bench/fashion_loco.sh's outputs (WORK/locoK.json): AUROC per held-out class and
score, the mean over the classes present, and the cost.

    python bench/loco_table.py runs/loco [--scores multiscale,nll,...]
"""
import argparse
import json
from pathlib import Path

CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--scores", default="multiscale,multiscale_nll,max_z,nll,bound,typicality,complexity,ratio_base")
    a = ap.parse_args()
    scores = a.scores.split(",")
    rows, per_image = [], []
    for k in range(10):
        f = Path(a.work) / f"loco{k}.json"
        if not f.is_file() or not f.stat().st_size:
            continue
        d = json.loads(f.read_text())
        t = d["table"][f"class:{k}"]
        rows.append((k, [t[s]["auroc"] if s in t else float("nan") for s in scores]))
        per_image.append(d["cost"]["seconds_per_image"])
    print("| held-out class | " + " | ".join(scores) + " |")
    print("|---" * (len(scores) + 1) + "|")
    for k, v in rows:
        print(f"| {k} {CLASSES[k]} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    if rows:
        means = [sum(v[i] for _, v in rows) / len(rows) for i in range(len(scores))]
        print(f"| **mean over {len(rows)} classes** | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
        print(f"\ncost: {sum(per_image) / len(per_image) * 1000:.0f} ms per image on average (scoring only)")


if __name__ == "__main__":
    main()
