"""Time a training step and an inference at SIZE x SIZE and print one JSON line.

    python3 bench/speed.py [--size 768] [--threads N] [--steps 5] [--config seed|wbc|recipe]
                           [--peer-python PATH]

`seed` is the original WBC configuration (resnet50, layers 3+, RPN on P2-P6, batch 1,
200 training ROIs, 2000/1000 proposals after NMS, 100 detections at minimum confidence 0,
random initial weights) on an image with 2 cells, the same work as
../shared/bench/peer_torchvision.py. With --peer-python, that script is run with the given
interpreter in the same run and the ratios ours / peer are printed too.
A benchmark, not a test: it prints figures and asserts nothing.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(os.path.dirname(ROOT), "shared", "bench", "peer_torchvision.py")


def bench_arguments(description, steps):
    """A parser with the flags the model benchmarks share (speed.py, profile_step.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--config", choices=["seed", "wbc", "recipe"], default="seed",
                    help="seed: Matterport's defaults (ResNet-50); wbc: WBCConfig; recipe: "
                         "WBCConfig with the from-scratch recipe (small backbone, all layers)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="COMPUTE_DTYPE (auto: bfloat16 on CPUs with native bfloat16)")
    ap.add_argument("--pyramid-min-level", type=int, choices=[2, 3], default=None,
                    help="override PYRAMID_MIN_LEVEL (seed: 2, wbc: WBCConfig's)")
    return ap


def start_tensorflow(threads):
    """Import TensorFlow with `threads` intra- and inter-op threads; returns the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def parse_args():
    ap = bench_arguments(__doc__.split("\n")[0], steps=5)
    ap.add_argument("--peer-python", default=None)
    return ap.parse_args()


def trained_layers(name):
    """The layers a configuration trains: the recipe's "all", else Matterport's "3+"."""
    return "all" if name == "recipe" else "3+"


def make_config(name, size, dtype="auto", pyramid_min_level=None):
    from mrcnn.config import Config
    if name in ("wbc", "recipe"):
        sys.path.insert(0, ROOT)
        from WBC import SCRATCH_RECIPE, WBCConfig
        Base = type("Recipe", (WBCConfig,), SCRATCH_RECIPE) if name == "recipe" else WBCConfig
    else:
        class Base(Config):
            NAME = "seed"
            NUM_CLASSES = 1 + 5
            BACKBONE = "resnet50"
            DETECTION_MIN_CONFIDENCE = 0

    class Bench(Base):
        IMAGES_PER_GPU = 1
        IMAGE_MIN_DIM = size
        IMAGE_MAX_DIM = size
        COMPUTE_DTYPE = dtype
        PYRAMID_MIN_LEVEL = pyramid_min_level or Base.PYRAMID_MIN_LEVEL
    return Bench()


class TwoCells:
    """One SIZE x SIZE noise image with two rectangular cells (the peer's boxes)."""

    def __init__(self, size, num_classes):
        import numpy as np
        from mrcnn import utils

        class Data(utils.Dataset):
            def load_image(self, image_id):
                return np.random.default_rng(0).integers(0, 255, (size, size, 3)).astype(np.uint8)

            def load_mask(self, image_id):
                masks = np.zeros((size, size, 2), bool)
                for i, (x1, y1, x2, y2) in enumerate([(0.16, 0.13, 0.34, 0.33),
                                                      (0.49, 0.52, 0.70, 0.73)]):
                    masks[int(y1 * size):int(y2 * size), int(x1 * size):int(x2 * size), i] = True
                return masks, np.array([1, 3], np.int32)
        self.dataset = Data()
        for c in range(1, num_classes):
            self.dataset.add_class("bench", c, f"class{c}")
        self.dataset.add_image("bench", 0, None)
        self.dataset.prepare()


def timed(fn, n):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_ours(args):
    tf = start_tensorflow(args.threads)
    from mrcnn import model as modellib
    from mrcnn.data import TrainingInput
    tf.random.set_seed(0)
    config = make_config(args.config, args.size, args.dtype, args.pyramid_min_level)
    data = TwoCells(args.size, config.NUM_CLASSES).dataset
    model = modellib.MaskRCNN("training", config, "/tmp/bench_logs")
    model.set_trainable(modellib.LAYER_REGEX[trained_layers(args.config)], verbose=0)
    train_step, _ = model._make_steps(model.make_optimizer(0.001))
    batch = tuple(tf.constant(x) for x in next(TrainingInput(data, config, seed=0).batches()))
    train_s = timed(lambda: [t.numpy() for t in tf.nest.flatten(train_step(batch))], args.steps)
    peak_train_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    weights = model.keras_model.get_weights()
    del model
    config.DETECTION_MIN_CONFIDENCE = 0
    infer = modellib.MaskRCNN("inference", config, "/tmp/bench_logs")
    image = data.load_image(0)
    infer_s = timed(lambda: infer.detect([image]), args.steps)
    from mrcnn.precision import compute_dtype
    return {"config": args.config, "size": args.size, "threads": args.threads,
            "compute_dtype": compute_dtype(config),
            "backbone": config.BACKBONE, "layers": trained_layers(args.config),
            "pyramid_min_level": config.PYRAMID_MIN_LEVEL,
            "train_rois": config.TRAIN_ROIS_PER_IMAGE,
            "proposals_train_infer": [config.POST_NMS_ROIS_TRAINING, config.POST_NMS_ROIS_INFERENCE],
            "train_step_s": round(train_s, 3), "infer_s": round(infer_s, 3),
            "peak_rss_mb": peak_train_mb, "projected_4500_steps_h": round(4500 * train_s / 3600, 2),
            "weights_count": len(weights)}


def measure_peer(args):
    out = subprocess.run([args.peer_python, PEER, "--size", str(args.size), "--threads",
                          str(args.threads), "--steps", str(args.steps)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    sys.path.insert(0, ROOT)
    result = measure_ours(args)
    if args.peer_python:
        peer = measure_peer(args)
        result.update(peer_train_step_s=peer["train_step_s"], peer_infer_s=peer["infer_s"],
                      peer_peak_rss_mb=peer["peak_rss_mb"],
                      train_ratio=round(result["train_step_s"] / peer["train_step_s"], 3),
                      infer_ratio=round(result["infer_s"] / peer["infer_s"], 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
