"""Accuracy on val during a training run: evaluate every Nth checkpoint, print and plot.

    python3 bench/accuracy_vs_epoch.py RUN_FOLDER --dataset=../shared/data/wbc-zheng2018 \
        [--every=5] [--out=accuracy_vs_epoch.png]

RUN_FOLDER is one run's log folder (mask_rcnn_wbc_NNNN.h5 and losses.csv). Each chosen
checkpoint is scored with `WBC.py evaluate` (its report goes beside it, as evaluate puts it;
a report already there is read, not redone). Prints one row per checkpoint: epoch, minutes
of training to it (losses.csv's `seconds`), mask AP, mask AP50, class accuracy of matched
cells and missed/spurious cells; draws the first three against the epoch.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wbc.report import read_losses  # noqa: E402

CHECKPOINT = re.compile(r"^mask_rcnn_\w+_(\d{4})\.h5$")


def checkpoints(run, every):
    """{epoch: path} of the run's checkpoints whose epoch is a multiple of `every`, plus the
    last one."""
    found = {int(m.group(1)): os.path.join(run, name)
             for name in os.listdir(run) for m in [CHECKPOINT.match(name)] if m}
    if not found:
        sys.exit(f"{run}: no mask_rcnn_*_NNNN.h5 checkpoints")
    last = max(found)
    return {e: p for e, p in sorted(found.items()) if e % every == 0 or e == last}


def scores(weights, dataset):
    """metrics.json of `evaluate` on val for one checkpoint, evaluated now if not yet."""
    report = os.path.splitext(weights)[0] + "_eval_val"
    path = os.path.join(report, "metrics.json")
    if not os.path.isfile(path):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "WBC.py"), "evaluate",
                               f"--dataset={dataset}", f"--weights={weights}",
                               f"--out={report}"], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"evaluate failed on {weights}:\n{done.stderr[-2000:]}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def minutes_to(run):
    """{epoch: minutes of training from the start to the end of that epoch}."""
    _, data = read_losses(os.path.join(run, "losses.csv"))
    if "seconds" not in data:
        return {}
    return {int(e): m for e, m in zip(data["epoch"], np.cumsum(data["seconds"]) / 60)}


def plot(rows, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("ap", "mask AP"), ("ap50", "mask AP50"),
                       ("accuracy", "class accuracy of matched cells")):
        ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--out", default="accuracy_vs_epoch.png")
    args = parser.parse_args()
    minutes = minutes_to(args.run)
    rows = []
    print("epoch  minutes  mask_AP  mask_AP50  class_accuracy  missed  spurious")
    for epoch, weights in checkpoints(args.run, args.every).items():
        m = scores(weights, args.dataset)
        det = m["detection"]
        row = {"epoch": epoch, "ap": m["coco"]["mask"]["AP"], "ap50": m["coco"]["mask"]["AP50"],
               "accuracy": det["class_accuracy"] if det["class_accuracy"] is not None
               else float("nan")}
        rows.append(row)
        print(f"{epoch:5d}  {minutes.get(epoch, float('nan')):7.1f}  {row['ap']:7.3f}  "
              f"{row['ap50']:9.3f}  {row['accuracy']:14.3f}  {det['missed']:6d}  "
              f"{det['spurious']:8d}", flush=True)
    run_name = os.path.basename(os.path.normpath(args.run))
    plot(rows, args.out, f"{run_name} on val (class accuracy at score >= 0.7)")
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
