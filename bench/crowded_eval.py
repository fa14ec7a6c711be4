"""COCO AP when images hold several cells: evaluate's cap of detections per image against a run's.

    python3 bench/crowded_eval.py WEIGHTS.h5 --dataset=../shared/data/wbc-zheng2018 \
        [--tile=320] [--caps 20 100]

Makes 2x2 mosaics of the data set's val images (four images of one class per mosaic, each
resized to --tile x --tile, a class's short last group filled from its first images) in a
temporary folder in the product's layout, then scores WEIGHTS on them as `evaluate` does
(per-class detections down to EVAL_MIN_SCORE, the run's config) at an image size of
2 x --tile, once per cap of detections per image (DETECTION_MAX_INSTANCES). Prints one JSON
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


def score(weights, data, size, cap, out):
    """Evaluate WEIGHTS at `size` px with DETECTION_MAX_INSTANCES=cap; one dict of figures."""
    import WBC
    from mrcnn import model as modellib
    from wbc.detect import evaluate_dataset
    saved = WBC.weights_config(weights, WBC.DEFAULT_LOGS)
    saved.pop("LAYERS", None)
    config = WBC.make_config(given=saved, IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
                             DETECTION_MIN_CONFIDENCE=WBC.EVAL_MIN_SCORE,
                             DETECTION_MAX_INSTANCES=cap)
    model = modellib.MaskRCNN("inference", config, out)
    WBC.resolve_weights(model, weights, WBC.DEFAULT_LOGS, for_training=False)
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
    ap.add_argument("--caps", type=int, nargs="+", default=[20, 100])
    args = ap.parse_args()
    import WBC
    WBC.set_threads(None)
    with tempfile.TemporaryDirectory() as tmp:
        make_mosaics(args.dataset, os.path.join(tmp, "mosaics"), args.tile)
        data = WBC.load_subset(os.path.join(tmp, "mosaics"), "val")
        for cap in args.caps:
            print(json.dumps(score(args.weights, data, 2 * args.tile, cap,
                                   os.path.join(tmp, f"cap{cap}"))), flush=True)


if __name__ == "__main__":
    main()
