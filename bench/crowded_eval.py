"""COCO AP when images hold several cells: evaluate's cap of detections per image against a run's.

    python3 bench/crowded_eval.py WEIGHTS.h5 --dataset=../shared/data/wbc-zheng2018 [--tile=320]

Makes 2x2 mosaics of the data set's val images (four images of one class per mosaic, each
resized to --tile x --tile, a class's short last group filled from its first images) in a
temporary folder in the product's layout, then scores WEIGHTS on them at an image size of
2 x --tile with the model `evaluate` builds (WBC.inference_model: the run's config, per-class
detections down to EVAL_MIN_SCORE), twice: with the run's own cap of detections per image
(DETECTION_MAX_INSTANCES, detect's) and with evaluate's (EVAL_MAX_DETECTIONS). Prints one JSON
line per cap: mask AP and AP50, cells matched/missed/spurious at 0.7, detections per image
(mean, max), how many images filled the cap, and the seconds of detection. A benchmark: it
prints figures and asserts nothing.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_mosaics(dataset, out, tile):
    """2x2 mosaics of dataset/val in out/val/<image|mask>/<Class>/mosaic_NN.<bmp|png>."""
    from wbc.dataset import read_image, read_mask, scan_dataset
    pairs = {}
    for item in scan_dataset(dataset, "val")[0]:
        pairs.setdefault(item["class_name"], []).append(item)
    for name, items in sorted(pairs.items()):
        for g in range(0, len(items), 4):
            group = (items[g:g + 4] + items * 4)[:4]
            image = np.zeros((2 * tile, 2 * tile, 3), np.uint8)
            mask = np.zeros((2 * tile, 2 * tile), np.uint8)
            for k, item in enumerate(group):
                rows, cols = slice(k // 2 * tile, (k // 2 + 1) * tile), \
                    slice(k % 2 * tile, (k % 2 + 1) * tile)
                image[rows, cols] = Image.fromarray(read_image(item["image"])).resize(
                    (tile, tile), Image.BILINEAR)
                # stray mask pixels stay specks, which the loader drops as in the data set
                cell = (read_mask(item["mask"]) > 0).astype(np.uint8) * 255
                mask[rows, cols] = Image.fromarray(cell).resize((tile, tile), Image.NEAREST)
            for kind, array, ext in (("image", image, "bmp"), ("mask", mask, "png")):
                folder = os.path.join(out, "val", kind, name)
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(array).save(os.path.join(folder, f"mosaic_{g // 4:02d}.{ext}"))


def score(weights, data, size, ranked, out):
    """Evaluate WEIGHTS at `size` px as `evaluate` builds its model (ranked: up to
    EVAL_MAX_DETECTIONS per image) or with the run's own cap (detect's); one dict of figures."""
    import WBC
    from wbc.detect import evaluate_dataset
    model, _ = WBC.inference_model(weights, WBC.DEFAULT_LOGS, WBC.EVAL_MIN_SCORE,
                                   image_size=size, ranked=ranked)
    cap = model.config.DETECTION_MAX_INSTANCES
    counts, detect = [], model.detect

    def counted(images, verbose=0):
        results = detect(images, verbose)
        counts.append(len(results[0]["scores"]))
        return results
    model.detect = counted
    start = time.perf_counter()
    evaluate_dataset(model, data, out, WBC.CLASS_NAMES, 0.7, {"cap": cap}, progress=False)
    seconds = time.perf_counter() - start
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    det = metrics["detection"]
    return {"cap": cap, "mask_AP": round(metrics["coco"]["mask"]["AP"], 3),
            "mask_AP50": round(metrics["coco"]["mask"]["AP50"], 3),
            "matched": det["matched"], "missed": det["missed"], "spurious": det["spurious"],
            "detections_mean": round(float(np.mean(counts)), 1), "detections_max": max(counts),
            "images_at_cap": sum(n >= cap for n in counts), "images": len(counts),
            "seconds": round(seconds, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--tile", type=int, default=320)
    args = ap.parse_args()
    import WBC
    WBC.set_threads(None)
    with tempfile.TemporaryDirectory() as tmp:
        make_mosaics(args.dataset, os.path.join(tmp, "mosaics"), args.tile)
        data = WBC.load_subset(os.path.join(tmp, "mosaics"), "val")
        for ranked in (False, True):
            print(json.dumps(score(args.weights, data, 2 * args.tile, ranked,
                                   os.path.join(tmp, f"ranked{ranked}"))), flush=True)


if __name__ == "__main__":
    main()
