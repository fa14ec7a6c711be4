"""Images per hour of `detect --images=DIR` on LISC-sized smears (720x576 BMP), end to end.

    python3 bench/detect_speed.py [--images 40] [--weights PATH] [--threads N] [--precision P]

Makes synthetic 720x576 smears (1-3 white cells each) in a temporary folder, builds the
inference model as `WBC.py detect` does (with --weights, that run's config.json; without,
WBCConfig defaults and random weights, saved to a temporary file), warms it up on one image,
then times the product's batch detect (decoding and writing overlapped with the model) over
the folder. Prints one JSON line. A benchmark: it prints figures and asserts nothing.
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_smears(folder, count):
    """`count` synthetic smears cropped to 720x576 and saved as BMP in folder; their paths."""
    import numpy as np
    from PIL import Image
    from wbc.synth import generate
    generate(os.path.join(folder, "synth"), images=count, size=720, val_fraction=0,
             progress=False)
    out = os.path.join(folder, "smears")
    os.makedirs(out)
    paths = []
    for root, _, files in os.walk(os.path.join(folder, "synth", "train", "image")):
        for name in sorted(files):
            image = np.asarray(Image.open(os.path.join(root, name)).convert("RGB"))[72:648]
            paths.append(os.path.join(out, os.path.splitext(name)[0] + ".bmp"))
            Image.fromarray(image).save(paths[-1])
    return sorted(paths)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--weights", default=None, help="a checkpoint (default: random weights)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None)
    ap.add_argument("--tta", action="store_true", help="as detect --tta (8 views per image)")
    args = ap.parse_args()
    import WBC
    WBC.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_smears(tmp, args.images)
        weights = args.weights
        if weights is None:
            import keras
            from mrcnn import model as modellib
            keras.utils.set_random_seed(0)      # the same random weights, run after run
            weights = os.path.join(tmp, "random.h5")
            modellib.MaskRCNN("inference", WBC.WBCConfig(), tmp).save_weights(weights)
        model, _ = WBC.inference_model(weights, os.path.join(tmp, "logs"),
                                       precision=args.precision, tta=args.tta)
        from wbc.detect import detect_files, read_image
        model.detect([read_image(files[0])])                     # trace the graph once
        start = time.perf_counter()
        detect_files(model, files, os.path.join(tmp, "out"), WBC.CLASS_NAMES, progress=False)
        seconds = time.perf_counter() - start
        with open(os.path.join(tmp, "out", "detections.json")) as f:
            detections = len(json.load(f))
    from mrcnn.precision import compute_dtype
    config = model.config
    print(json.dumps({
        "images": len(files), "image_size": "720x576", "threads": args.threads, "tta": args.tta,
        "weights": args.weights or "random (WBCConfig)", "backbone": config.BACKBONE,
        "model_input": int(config.IMAGE_MAX_DIM), "pyramid_min_level": config.PYRAMID_MIN_LEVEL,
        "compute_dtype": compute_dtype(config),
        "detections": detections, "seconds": round(seconds, 2),
        "seconds_per_image": round(seconds / len(files), 3),
        "images_per_hour": round(3600 * len(files) / seconds)}))


if __name__ == "__main__":
    main()
