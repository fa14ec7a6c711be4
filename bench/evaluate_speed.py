"""Time the evaluation of 100 synthetic images (no model) and print one JSON line.

    python3 bench/evaluate_speed.py [--images 100] [--height 576] [--width 720] [--keep DIR]

Each image holds 1-3 disc-shaped cells of random classes on a noisy background; the
predictions are the discs slightly moved and resized, with now and then a wrong class, a
missed cell or a spurious detection. Timed: wbc.evaluate.evaluate (COCO AP for masks and
boxes, matching, counting) and wbc.report.write_report (metrics.json, report.md, three
PNGs).
A benchmark, not a test: it prints figures and asserts nothing. The target is under 10 s
for 100 images, model time excluded.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wbc import evaluate as ev  # noqa: E402
from wbc.report import write_report  # noqa: E402

NAMES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


def disc(h, w, cy, cx, r):
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def synthetic(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for image_id in range(n):
        k = int(rng.integers(1, 4))
        cells, classes = [], []
        while len(cells) < k:
            r = int(rng.integers(30, 60))
            cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
            if all((cy - c[0]) ** 2 + (cx - c[1]) ** 2 > (r + c[2] + 4) ** 2 for c in cells):
                cells.append((cy, cx, r))
                classes.append(int(rng.integers(1, 6)))
        image = rng.integers(150, 230, size=(h, w, 3), dtype=np.uint8)
        gts.append({"image_id": image_id, "file_name": "img{:03d}.png".format(image_id),
                    "height": h, "width": w, "image": image,
                    "masks": np.stack([disc(h, w, *c) for c in cells], -1),
                    "class_ids": np.array(classes, np.int32)})
        pm, pc, ps = [], [], []
        for (cy, cx, r), c in zip(cells, classes):
            if rng.random() < 0.05:
                continue                                       # missed
            dy, dx, dr = rng.integers(-3, 4, size=3)
            pm.append(disc(h, w, cy + dy, cx + dx, max(5, r + dr)))
            pc.append(c if rng.random() > 0.1 else int(rng.integers(1, 6)))
            ps.append(float(rng.uniform(0.6, 1.0)))
        if rng.random() < 0.1:                                 # spurious
            pm.append(disc(h, w, int(rng.integers(20, h - 20)), int(rng.integers(20, w - 20)), 15))
            pc.append(int(rng.integers(1, 6)))
            ps.append(float(rng.uniform(0.3, 0.9)))
        preds.append({"image_id": image_id,
                      "masks": np.stack(pm, -1) if pm else np.zeros((h, w, 0), bool),
                      "class_ids": np.array(pc, np.int32),
                      "scores": np.array(ps, np.float32)})
    return gts, preds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--height", type=int, default=576)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--keep", default=None, help="write the report here and keep it")
    args = ap.parse_args()
    gts, preds = synthetic(args.images, args.height, args.width)
    t0 = time.perf_counter()
    metrics = ev.evaluate(gts, preds, NAMES, min_confidence=0.7)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or os.path.join(tmp, "report")
        summary = write_report(metrics, gts, preds, NAMES, out,
                               {"model": "synthetic", "dataset": "synthetic", "subset": "val"})
        t2 = time.perf_counter()
    print(json.dumps({"images": args.images, "evaluate_s": round(t1 - t0, 3),
                      "report_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}))
    print(summary, file=sys.stderr)


if __name__ == "__main__":
    main()
