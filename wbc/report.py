"""Evaluation report files: metrics.json, report.md and the pictures, and training curves.

Matplotlib (Agg, pyplot-free figures) on the metrics of :func:`wbc.evaluate.evaluate`;
like :mod:`wbc.evaluate`, this module never imports TensorFlow.

:func:`write_report` writes metrics.json, report.md, confusion.png, pr_curves.png and
worst.png into an output folder atomically; :func:`summary_line` is the CLI's one-line
summary; :func:`evaluate_results_file` scores a COCO results JSON and writes its report;
:func:`plot_loss_curves` draws the training curves from the trainer's losses.csv.
"""
import csv
import datetime
import json
import logging
import math
import os
import platform
import shutil

import numpy as np
import matplotlib

matplotlib.use("Agg")   # before any pyplot import; figures here are pyplot-free
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mrcnn.durable import create_temporary_folder, fsync_folder, replacing  # noqa: E402
from wbc.coco_format import to_coco_results  # noqa: E402
from wbc.divergence import find_divergence  # noqa: E402
from wbc.errors import UserError  # noqa: E402
from wbc.evaluate import SCHEMA, _jsonable, evaluate, load_coco_results  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = [
    "DPI", "FIGSIZES", "PNG_SIZES", "REPORT_FILES", "WORST_N",
    "write_report", "summary_line", "evaluate_results_file", "plot_loss_curves",
]

DPI = 100
#: figure sizes in inches; every PNG is exactly FIGSIZES[name] * DPI pixels
FIGSIZES = {
    "confusion.png": (8.0, 7.0),
    "pr_curves.png": (8.0, 6.0),
    "worst.png": (10.0, 17.0),
    "curves.png": (12.0, 7.0),
}
#: (width, height) in pixels of every PNG written here
PNG_SIZES = {name: (int(round(w * DPI)), int(round(h * DPI))) for name, (w, h) in FIGSIZES.items()}
# metrics.json last: moved into an existing report folder, it comes after the rest.
REPORT_FILES = ("confusion.png", "pr_curves.png", "worst.png", "detections.json", "report.md",
                "metrics.json")
WORST_N = 4          # images in worst.png
GREY = 128
# colours per class (1..K), then cycling
_CLASS_COLOURS = ["#9467bd", "#ff7f0e", "#1f77b4", "#2ca02c", "#d62728",
                  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
_LOSS_ORDER = ["loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
               "mrcnn_bbox_loss", "mrcnn_mask_loss"]


############################################################
#  Small helpers
############################################################

def _colour(class_id):
    return _CLASS_COLOURS[(int(class_id) - 1) % len(_CLASS_COLOURS)]


def _versions():
    from importlib import metadata
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("numpy", "pycocotools", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


############################################################
#  Report
############################################################

def _fmt(x, digits=3, pct=False):
    if x is None:
        return "n/a"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return "{:.{}f}{}".format(100.0 * x if pct else x, 1 if pct else digits, "%" if pct else "")


def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header, rows):
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_line(metrics, meta=None, out_dir=None):
    """One line for the CLI: subset, images, cells, mask/box AP, F1, Dice, count MAE."""
    meta = meta or {}
    t = metrics["thresholds"]
    mask, box = metrics["coco"]["mask"], metrics["coco"]["box"]
    det, seg = metrics["detection"], metrics["segmentation"]
    head = "{}: ".format(meta["subset"]) if meta.get("subset") else ""
    line = ("{}{} images, {} cells | mask AP {} AP50 {} | box AP {} | F1 {} (class-aware "
            "micro; P {} R {}) at score>={:.2f} | Dice {} ({} >= {}) | count MAE {}/image").format(
        head, metrics["n_images"], metrics["n_true_cells"], _fmt(mask["AP"]),
        _fmt(mask["AP50"]), _fmt(box["AP"]), _fmt(metrics["micro"]["f1"]),
        _fmt(metrics["micro"]["precision"]), _fmt(metrics["micro"]["recall"]),
        t["min_confidence"], _fmt(seg["dice_mean"]), _fmt(seg["frac_matched_dice_ge_good"],
                                                          pct=True),
        t["dice_good"], _fmt(metrics["counting"]["count_mae_total"], 2))
    if det["matched"] or det["missed"] or det["spurious"]:
        line += " | missed {}, spurious {}".format(det["missed"], det["spurious"])
    if out_dir is not None:
        line += " | report: {}".format(os.path.join(os.fspath(out_dir), "report.md"))
    return line


def _new_figure(name):
    return Figure(figsize=FIGSIZES[name], dpi=DPI)


def _save_figure(fig, path):
    """fig as a PNG at path, written whole (mrcnn.durable.replacing)."""
    with replacing(path, "wb") as f:
        fig.savefig(f, format="png", dpi=DPI)


def _write_text(path, text):
    with replacing(path, encoding="utf-8", newline="\n") as f:
        f.write(text)


def _plot_confusion(metrics, path):
    conf = metrics["confusion"]
    mat = np.asarray(conf["matrix"], dtype=np.int64)
    rows, cols = conf["rows"], conf["columns"]
    K = len(rows) - 1
    row_sum = mat.sum(1, keepdims=True)
    frac = np.divide(mat, row_sum, out=np.zeros(mat.shape), where=row_sum > 0)
    frac_masked = np.ma.masked_array(frac, mask=np.zeros_like(frac, bool))
    frac_masked.mask[K, K] = True
    fig = _new_figure("confusion.png")
    ax = fig.add_axes([0.25, 0.17, 0.56, 0.7])
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#dddddd")
    im = ax.imshow(frac_masked, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for r in range(K + 1):
        for c in range(K + 1):
            if r == K and c == K:
                ax.text(c, r, "-", ha="center", va="center", color="#666666", fontsize=10)
                continue
            colour = "white" if frac[r, c] > 0.55 else "black"
            ax.text(c, r, "{}\n{:.0f}%".format(mat[r, c], 100 * frac[r, c]) if mat[r, c]
                    else "0", ha="center", va="center", color=colour, fontsize=9)
    supports = mat.sum(1)
    ax.set_xticks(range(K + 1), [str(c) for c in cols], rotation=35, ha="right")
    ax.set_yticks(range(K + 1), ["{} (n={})".format(r, s) for r, s in zip(rows, supports)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.axhline(K - 0.5, color="black", lw=1)
    ax.axvline(K - 0.5, color="black", lw=1)
    t = metrics["thresholds"]
    ax.set_title("Confusion matrix: {} true cells, {} detections with score >= {:.2f}\n"
                 "matched at mask IoU >= {:.2f} (class ignored for matching)".format(
                     metrics["n_true_cells"], metrics["n_predictions_used"],
                     t["min_confidence"], t["iou_threshold"]), fontsize=10)
    cax = fig.add_axes([0.85, 0.17, 0.03, 0.7])
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("fraction of the row (counts printed in cells)")
    _save_figure(fig, path)


def _plot_pr_curves(metrics, path):
    pr = metrics["pr_curves"]
    fig = _new_figure("pr_curves.png")
    ax = fig.add_axes([0.1, 0.1, 0.55, 0.78])
    recall = pr["recall"]
    handles = []
    for name, info in metrics["per_class"].items():
        colour = _colour(info["class_id"])
        curve = pr["precision"].get(name)
        if curve is None or recall is None:
            handles.append(Line2D([], [], color=colour, ls=":",
                                  label="{}: no true cells".format(name)))
            continue
        line, = ax.plot(recall, curve, color=colour, lw=1.8, drawstyle="steps-post",
                        label="{} (n={}, AP50 {})".format(name, info["support"],
                                                          _fmt(info["mask_AP50"])))
        handles.append(line)
        if info["precision"] is not None and info["recall"] is not None:
            ax.plot([info["recall"]], [info["precision"]], marker="o", ms=7, color=colour,
                    mec="black", ls="none")
    handles.append(Line2D([], [], marker="o", ms=7, color="white", mec="black", ls="none",
                          label="at score >= {:.2f}".format(
                              metrics["thresholds"]["min_confidence"])))
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.set_title("Precision-recall per class (masks, IoU >= 0.5,\nCOCO interpolated, all "
                 "scores)", fontsize=10)
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.67, 0.5), fontsize=8,
               frameon=False)
    _save_figure(fig, path)


def _load_picture(gt, h, w):
    """uint8 RGB [h, w, 3] for the gallery: gt["image"], gt["path"], else grey."""
    image = gt.get("image")
    if image is None and gt.get("path"):
        try:
            from PIL import Image
            with Image.open(gt["path"]) as img:
                image = np.asarray(img.convert("RGB"))
        except Exception as e:  # a picture we cannot show must not sink the report
            logger.warning("%s: cannot read the image for worst.png (%s); drawing on grey",
                           gt["path"], e)
            image = None
    if image is not None:
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if image.shape[:2] != (h, w) or image.ndim != 3 or image.shape[2] != 3:
            logger.warning("image %s is %s, expected %dx%d; drawing on grey",
                           gt.get("file_name"), image.shape, h, w)
            image = None
        elif image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image is None:
        image = np.full((h, w, 3), GREY, np.uint8)
    return image


def _outline(ax, mask, colour, style="solid", lw=1.4):
    """Contour of a bool mask drawn on ax; returns its box (x0, y0, x1, y1) or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sub = np.pad(mask[y0:y1, x0:x1].astype(np.float32), 1)
    ax.contour(np.arange(x0 - 1, x1 + 1), np.arange(y0 - 1, y1 + 1), sub, levels=[0.5],
               colors=[colour], linewidths=lw, linestyles=style)
    return x0, y0, x1, y1


def _label(ax, box, shape, text, colour, error=False, faint=False):
    """Label above the box (below it near the top edge), kept inside the picture; faint
    labels (detections below the threshold) go below the box, out of the others' way."""
    x0, y0, x1, y1 = box
    h, w = shape
    right = x0 > 0.55 * w
    top = y1 > 0.92 * h if faint else y0 > 0.08 * h
    ax.text(x1 if right else x0, y0 - 3 if top else y1 + 3, text,
            fontsize=6 if faint else 7, color="white", clip_on=True,
            va="bottom" if top else "top", ha="right" if right else "left",
            bbox={"facecolor": "red" if error else "#555555" if faint else colour,
                  "alpha": 0.6 if faint else 0.85, "pad": 1.2,
                  "edgecolor": "black" if error else "none"})


def _worst_images(metrics):
    order = {e["image_id"]: n for n, e in enumerate(metrics["per_image"])}
    bad = [e for e in metrics["per_image"] if e["errors"] > 0]
    bad.sort(key=lambda e: (-e["errors"], -e["n_missed"], order[e["image_id"]]))
    return bad[:WORST_N]


def _plot_worst(metrics, gts, preds, class_names, path):
    gts_by_id = {int(g["image_id"]): g for g in gts}
    preds_by_id = {int(p["image_id"]): p for p in (preds or [])}
    chosen = _worst_images(metrics)
    t = metrics["thresholds"]
    fig = _new_figure("worst.png")
    fig.suptitle("Images with the most errors (detections with score >= {:.2f}, matched at "
                 "mask IoU >= {:.2f})".format(t["min_confidence"], t["iou_threshold"]),
                 fontsize=11, y=0.995)
    if not chosen:
        fig.text(0.5, 0.5, "No errors: every true cell was found with the right class\n"
                 "and there is no spurious detection ({} images).".format(metrics["n_images"]),
                 ha="center", va="center", fontsize=13)
        _save_figure(fig, path)
        return []
    axes = fig.subplots(WORST_N, 2, gridspec_kw={"left": 0.02, "right": 0.98, "top": 0.955,
                                                  "bottom": 0.05, "hspace": 0.18,
                                                  "wspace": 0.04})
    for ax in axes.ravel():
        ax.set_axis_off()
    for row, entry in enumerate(chosen):
        gt = gts_by_id[int(entry["image_id"])]
        pred = preds_by_id.get(int(entry["image_id"]), {})
        gmasks = np.asarray(gt.get("masks")) if gt.get("masks") is not None else None
        gcls = np.asarray(gt.get("class_ids", []), dtype=np.int64).reshape(-1)
        h = int(gt.get("height", gmasks.shape[0] if gmasks is not None else 1))
        w = int(gt.get("width", gmasks.shape[1] if gmasks is not None else 1))
        pmasks = pred.get("masks")
        pcls = np.asarray(pred.get("class_ids", []), dtype=np.int64).reshape(-1)
        pscores = np.asarray(pred.get("scores", []), dtype=np.float64).reshape(-1)
        picture = _load_picture(gt, h, w)
        ax_t, ax_p = axes[row]
        for ax in (ax_t, ax_p):
            ax.imshow(picture, interpolation="antialiased")
        for i, c in enumerate(gcls):
            box = _outline(ax_t, gmasks[:, :, i], _colour(c))
            if box:
                _label(ax_t, box, (h, w), class_names[c - 1], _colour(c))
        matched_gt = {m[1]: m[0] for m in entry["matched"]}   # pred index -> gt index
        used = set(matched_gt) | set(entry["spurious"])
        for j in range(len(pcls)):
            c = int(pcls[j])
            mask = np.asarray(pmasks)[:, :, j] != 0
            text = "{} {:.2f}".format(class_names[c - 1], pscores[j])
            if j not in used:           # below min_confidence: context only
                box = _outline(ax_p, mask, _colour(c), style="dotted", lw=1.0)
                if box:
                    _label(ax_p, box, (h, w), "{} < {:.2f}".format(text, t["min_confidence"]),
                           _colour(c), faint=True)
                continue
            box = _outline(ax_p, mask, _colour(c))
            if not box:
                continue
            if j in matched_gt and gcls[matched_gt[j]] != c:
                _label(ax_p, box, (h, w), text + " (true {})".format(
                    class_names[gcls[matched_gt[j]] - 1]), _colour(c), error=True)
            elif j not in matched_gt:
                _label(ax_p, box, (h, w), text + " spurious", _colour(c), error=True)
            else:
                _label(ax_p, box, (h, w), text, _colour(c))
        for i in entry["missed"]:
            box = _outline(ax_p, gmasks[:, :, i], "white", style="dashed", lw=1.6)
            if box:
                _label(ax_p, box, (h, w), "missed " + class_names[gcls[i] - 1], "black",
                       error=True)
        for ax in (ax_t, ax_p):
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        name = str(entry["file_name"])
        if len(name) > 48:
            name = "..." + name[-45:]
        ax_t.set_title("truth: {} ({} cells)".format(name, entry["n_true"]), fontsize=9)
        ax_p.set_title("prediction: {} errors ({} missed, {} spurious, {} wrong class)".format(
            entry["errors"], entry["n_missed"], entry["n_spurious"], entry["n_misclassified"]),
            fontsize=9)
    handles = [Line2D([], [], color=_colour(k), lw=2, label=n)
               for k, n in enumerate(class_names, start=1)]
    handles += [Line2D([], [], color="white", lw=2, ls="--", label="missed (true outline)"),
                Line2D([], [], color="black", lw=1, ls=":", label="score below threshold"),
                Line2D([], [], color="red", lw=6, label="error")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8,
               frameon=True, facecolor="#9a9a9a")
    _save_figure(fig, path)
    return chosen


# meta["per_class"] of evaluate -> how the model turned its regions into detections.
DETECTION_KINDS = {
    True: "one per (region, class) whose score reaches the floor, as torchvision does (a "
          "cell's second class is ranked too); above 0.5 one class per region.",
    False: "one per region, of its most probable class (Matterport).",
    None: "as given in the results file.",
}


def _detections_cap(meta):
    """' At most N per image ...' for evaluate's meta["max_detections"], else ''."""
    if not meta.get("max_detections"):
        return ""
    each = " (per model and view, before merging)" if meta.get("tta") or \
        (meta.get("ensemble") or 1) > 1 else ""
    return f" At most {meta['max_detections']} per image{each}."


def _second_outlines(thresholds):
    """' (not a second outline of a cell: ...)' for metrics that dropped them, else ''."""
    if thresholds.get("same_cell_iou") is None:
        return ""
    return (" (and not a second outline of a cell: mask IoU > {:.2f} with a better "
            "detection)".format(thresholds["same_cell_iou"]))


def _report_md(doc, worst):
    m = doc
    t = m["thresholds"]
    names = m["classes"]
    out = []
    title = "White blood cell evaluation"
    if m.get("subset") or m.get("dataset"):
        title += ": {}{}".format(m.get("subset") or "", " of {}".format(m["dataset"])
                                 if m.get("dataset") else "")
    out += ["# " + title, ""]
    out += ["- Model: `{}`".format(m.get("model") or "n/a"),
            "- Dataset: `{}`, subset `{}`: {} images, {} true cells, {} detections ({} with "
            "score >= {:.2f})".format(m.get("dataset") or "n/a", m.get("subset") or "n/a",
                                      m["n_images"], m["n_true_cells"], m["n_predictions"],
                                      m["n_predictions_used"], t["min_confidence"]),
            "- Detections: " + DETECTION_KINDS[m.get("meta", {}).get("per_class")]
            + _detections_cap(m.get("meta", {})),
            "- Matching: a detection with score >= {:.2f}{} matches the unmatched true cell it "
            "overlaps most if their mask IoU >= {:.2f}; greedy, highest score first, one to "
            "one, class ignored for matching (a wrong class is then counted as a false "
            "negative of the true class and a false positive of the predicted one).".format(
                t["min_confidence"], _second_outlines(t), t["iou_threshold"]),
            "- Created {}; numpy {}, pycocotools {}, matplotlib {}, Python {}.".format(
                m["created"], m["versions"].get("numpy"), m["versions"].get("pycocotools"),
                m["versions"].get("matplotlib"), m["versions"].get("python")),
            "", "**Summary:** " + m["summary"], ""]

    out += ["## COCO average precision (pycocotools, all detections)", ""]
    keys = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"]
    out.append(_md_table(["", "AP", "AP50", "AP75", "AP small", "AP medium", "AP large",
                          "AR100"],
                         [[kind] + [_fmt(m["coco"][key][k]) for k in keys]
                          for kind, key in (("mask", "mask"), ("box", "box"))]))
    s = m["n_true_by_size"]
    out += ["", "AP averages IoU 0.50:0.95; AP50 and AP75 at one IoU. Sizes: small < 32² px "
            "({} true cells), medium < 96² px ({}), large ({}); n/a: no true cell of that "
            "size or no true cell at all.".format(s["small"], s["medium"], s["large"]), ""]

    out += ["## Per class (detections with score >= {:.2f})".format(t["min_confidence"]), ""]
    rows = []
    for name in names:
        c = m["per_class"][name]
        rows.append([name, c["support"], c["n_predicted"], c["tp"], c["fp"], c["fn"],
                     _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]),
                     _fmt(c["mask_AP50"]), _fmt(c["mask_AP"]), _fmt(c["box_AP50"]),
                     _fmt(c["box_AP"]), _fmt(c["dice_mean"])])
    mi, ma = m["micro"], m["macro"]
    rows.append(["all (micro)", m["n_true_cells"], m["n_predictions_used"], mi["tp"], mi["fp"],
                 mi["fn"], _fmt(mi["precision"]), _fmt(mi["recall"]), _fmt(mi["f1"]),
                 "", "", "", "", _fmt(m["segmentation"]["dice_mean"])])
    rows.append(["mean of classes (macro; AP as COCO)", "", "", "", "", "",
                 _fmt(ma["precision"]), _fmt(ma["recall"]), _fmt(ma["f1"]),
                 _fmt(m["coco"]["mask"]["AP50"]), _fmt(m["coco"]["mask"]["AP"]),
                 _fmt(m["coco"]["box"]["AP50"]), _fmt(m["coco"]["box"]["AP"]),
                 _fmt(ma["dice_mean"])])
    out.append(_md_table(["class", "true cells", "predicted", "TP", "FP", "FN", "precision",
                          "recall", "F1", "mask AP50", "mask AP", "box AP50", "box AP",
                          "Dice"], rows))
    d = m["detection"]
    out += ["", "Finding cells, class ignored: {} matched, {} missed, {} spurious; precision "
            "{}, recall {}, F1 {}; the class is right for {} of the matched cells.".format(
                d["matched"], d["missed"], d["spurious"], _fmt(d["precision"]),
                _fmt(d["recall"]), _fmt(d["f1"]), _fmt(d["class_accuracy"], pct=True)), ""]

    out += ["## Confusion matrix", "",
            "Rows: true class; columns: predicted class. \"missed\": true cells without a "
            "matching detection; \"spurious\": detections matching no true cell.", ""]
    conf = m["confusion"]
    mat = conf["matrix"]
    rows = []
    for r, label in enumerate(conf["rows"]):
        cells = [str(v) for v in mat[r]]
        if r == len(conf["rows"]) - 1:
            cells[-1] = "-"
        rows.append(["**{}**".format(label)] + cells)
    out.append(_md_table(["true \\ predicted"] + conf["columns"], rows))
    out += ["", "![confusion matrix](confusion.png)", ""]

    sg = m["segmentation"]
    out += ["## Outlines of matched cells (whole cell)", "",
            "{} matched cells: mean Dice {}, median Dice {}, mean IoU {}; Dice >= {}: {} of "
            "the matched cells, {} of all true cells (missed cells count as failures).".format(
                sg["n_matched"], _fmt(sg["dice_mean"]), _fmt(sg["dice_median"]),
                _fmt(sg["iou_mean"]), sg["dice_good"],
                _fmt(sg["frac_matched_dice_ge_good"], pct=True),
                _fmt(sg["frac_true_dice_ge_good"], pct=True)), ""]
    out.append(_md_table(["true class", "matched", "mean Dice", "mean IoU"],
                         [[n, m["per_class"][n]["n_matched"], _fmt(m["per_class"][n]["dice_mean"]),
                           _fmt(m["per_class"][n]["iou_mean"])] for n in names]))
    out.append("")

    cnt = m["counting"]
    out += ["## Counting and differential (detections with score >= {:.2f})".format(
        t["min_confidence"]), ""]
    rows = [[n, cnt["totals_true"][n], cnt["totals_pred"][n],
             _fmt(cnt["pooled_pct_true"][n] / 100 if cnt["pooled_pct_true"][n] is not None
                  else None, pct=True),
             _fmt(cnt["pooled_pct_pred"][n] / 100 if cnt["pooled_pct_pred"][n] is not None
                  else None, pct=True),
             _fmt(cnt["count_mae_per_class"][n]),
             _fmt(cnt["differential_mae_pp_per_class"][n], 2)] for n in names]
    rows.append(["all", sum(cnt["totals_true"].values()), sum(cnt["totals_pred"].values()),
                 "", "", _fmt(cnt["count_mae_total"]),
                 _fmt(cnt["differential_mae_pp_mean_over_classes"], 2)])
    out.append(_md_table(["class", "true cells", "predicted cells", "true %", "predicted %",
                          "count MAE per image", "differential MAE (pp)"], rows))
    out += ["", "Count MAE: mean over the {} images of |predicted - true| cells per image "
            "(\"all\": total cells per image; mean over classes: {}). Differential MAE: mean "
            "over the {} images with at least one true and one predicted cell of |predicted "
            "% - true %| per class, in percentage points (\"all\": mean over classes); {} "
            "images with cells got no detection.".format(
                cnt["n_images"], _fmt(cnt["count_mae_mean_over_classes"]),
                cnt["n_images_differential"], cnt["n_images_no_prediction"]), ""]

    out += ["## Precision-recall curves", "",
            "Masks at IoU >= 0.5, COCO 101-point interpolation over all detections; dots: "
            "the operating point at score >= {:.2f}.".format(t["min_confidence"]), "",
            "![precision-recall curves](pr_curves.png)", ""]

    out += ["## Images with the most errors", ""]
    if worst:
        out.append(_md_table(["image", "id", "true", "predicted", "missed", "spurious",
                              "wrong class", "errors"],
                             [[e["file_name"], e["image_id"], e["n_true"], e["n_pred"],
                               e["n_missed"], e["n_spurious"], e["n_misclassified"],
                               e["errors"]] for e in worst]))
        n_bad = sum(1 for e in m["per_image"] if e["errors"])
        out += ["", "{} of {} images have at least one error; the {} worst are drawn below "
                "(left: truth, right: prediction).".format(n_bad, m["n_images"], len(worst))]
    else:
        out.append("No image has an error.")
    out += ["", "![images with the most errors](worst.png)", ""]
    out += ["## Versions", ""]
    out.append(_md_table(["", "version"], [[k, v] for k, v in m["versions"].items()]))
    out.append("")
    return "\n".join(out)


def _named_results(gts, preds):
    """preds as COCO results, each detection with the file_name of its image in gts."""
    names = {gt["image_id"]: gt.get("file_name") for gt in gts}
    return to_coco_results([dict(p, file_name=names.get(p["image_id"])) for p in preds])


def write_report(metrics, gts, preds, class_names, out_dir, meta=None):
    """Write metrics.json, report.md, confusion.png, pr_curves.png, worst.png and
    detections.json (every scored detection as COCO results named "<Class>/<file>", for
    `evaluate --results` to score again at another threshold) into out_dir and return the
    one-line summary.

    Everything is built in a temporary folder beside out_dir, so a failure leaves out_dir
    as it was. A new out_dir is that folder renamed (the report appears whole); into an
    existing one the files move one by one with os.replace, metrics.json last. meta:
    {"model", "dataset", "subset", ...} recorded in metrics.json.
    """
    meta = dict(meta or {})
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError("{}: exists and is not a folder. Choose another output folder".format(
            out_dir))
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    class_names = [str(c) for c in class_names]
    if list(metrics.get("classes", class_names)) != class_names:
        raise UserError("write_report: class names {} differ from the metrics' {}".format(
            class_names, metrics.get("classes")))
    summary = summary_line(metrics, meta, out_dir)
    doc = {"schema": metrics.get("schema", SCHEMA),
           "model": meta.get("model"), "dataset": meta.get("dataset"),
           "subset": meta.get("subset"),
           "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "versions": _versions(), "meta": meta, "summary": summary}
    doc.update({k: v for k, v in metrics.items() if k not in doc or k == "schema"})
    tmp = create_temporary_folder(out_dir)
    try:
        _plot_confusion(metrics, os.path.join(tmp, "confusion.png"))
        _plot_pr_curves(metrics, os.path.join(tmp, "pr_curves.png"))
        worst = _plot_worst(metrics, gts, preds, class_names, os.path.join(tmp, "worst.png"))
        doc["worst_images"] = [{"image_id": e["image_id"], "file_name": e["file_name"],
                                "errors": e["errors"]} for e in worst]
        _write_text(os.path.join(tmp, "detections.json"),
                    json.dumps(_named_results(gts, preds), separators=(",", ":")))
        doc = _jsonable(doc)
        text = json.dumps(doc, indent=1, allow_nan=False)
        _write_text(os.path.join(tmp, "metrics.json"), text + "\n")
        _write_text(os.path.join(tmp, "report.md"), _report_md(doc, worst))
        try:
            os.rename(tmp, out_dir)     # fails if out_dir exists (and is not empty)
        except OSError:
            if not os.path.isdir(out_dir):
                raise
            for name in REPORT_FILES:
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
            fsync_folder(out_dir)
        fsync_folder(parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def evaluate_results_file(results_path, gts, class_names, out_dir=None, meta=None,
                          min_confidence=0.7, iou_threshold=0.5):
    """Score an existing COCO results JSON against ground truth without a model.

    Returns (metrics, summary line); writes the report into out_dir when given."""
    preds = load_coco_results(results_path, gts, num_classes=len(class_names))
    metrics = evaluate(gts, preds, class_names, min_confidence, iou_threshold)
    meta = dict(meta or {})
    meta.setdefault("model", "results file {}".format(os.fspath(results_path)))
    meta.setdefault("results", os.fspath(results_path))
    if out_dir is None:
        return metrics, summary_line(metrics, meta)
    return metrics, write_report(metrics, gts, preds, class_names, out_dir, meta)


############################################################
#  Training curves
############################################################

def read_losses(csv_path):
    """Read the trainer's losses.csv: (its column names, {column: float array [epochs]} in
    epoch order, an empty or unreadable cell as NaN). UserError when it cannot be read or
    holds no epoch."""
    csv_path = os.fspath(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = list(reader)
    except FileNotFoundError:
        raise UserError("{}: file not found. Give the losses.csv of a training run (in its "
                        "log folder)".format(csv_path)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError("{}: cannot read ({}). Give the losses.csv written by training".format(
            csv_path, e)) from None
    if "epoch" not in fields:
        raise UserError("{}: no 'epoch' column (columns: {}). Give the losses.csv written "
                        "by training".format(csv_path, ", ".join(fields) or "none"))
    if not rows:
        raise UserError("{}: no epoch recorded yet. Wait for the first epoch to "
                        "finish".format(csv_path))

    def value(text):
        try:
            v = float(text)
        except (TypeError, ValueError):
            return float("nan")
        return v

    data = {name: np.array([value(r.get(name)) for r in rows]) for name in fields}
    if np.any(np.isnan(data["epoch"])):
        raise UserError("{}: an epoch value is not a number".format(csv_path))
    order = np.argsort(data["epoch"], kind="stable")
    return fields, {k: v[order] for k, v in data.items()}


def _mark_divergence(ax, epochs, losses):
    """Mark a lasting jump of the training loss on its axes: a line at the jump's epoch and
    the level the loss did not come back under."""
    found = find_divergence(epochs, losses)
    if found is None:
        return
    ax.axvline(found.jump_epoch, color="#ff7f0e", lw=1.5, ls=":",
               label=f"diverged? (epoch {found.jump_epoch:g})")
    ax.axhline(found.level, color="#ff7f0e", lw=0.8, alpha=0.6)


def plot_loss_curves(csv_path, png_path):
    """Draw curves.png from the trainer's losses.csv: one panel per loss, training and (when
    present) validation per epoch; a lasting jump of the total training loss (divergence.py)
    is marked on its panel. Written atomically; returns png_path."""
    fields, data = read_losses(csv_path)
    losses = [f for f in fields
              if f not in ("epoch", "lr", "seconds") and not f.startswith("val_")
              and np.any(np.isfinite(data[f]))]
    # a val_ column without its training twin still gets a panel
    losses += [f[4:] for f in fields if f.startswith("val_") and f[4:] not in fields
               and np.any(np.isfinite(data[f]))]
    losses.sort(key=lambda f: (_LOSS_ORDER.index(f) if f in _LOSS_ORDER else len(_LOSS_ORDER),
                               fields.index(f) if f in fields else 0))
    if not losses:
        raise UserError("{}: no loss column with a number. Give the losses.csv written by "
                        "training".format(os.fspath(csv_path)))
    epochs = data["epoch"]
    fig = _new_figure("curves.png")
    n = len(losses)
    ncols = 3 if n > 4 else 2 if n > 1 else 1
    nrows = int(math.ceil(n / ncols))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False,
                                      gridspec_kw={"hspace": 0.45, "wspace": 0.28,
                                                   "top": 0.88, "bottom": 0.09,
                                                   "left": 0.06, "right": 0.98})).ravel()
    for ax, name in zip(axes, losses):
        if name in data:
            ax.plot(epochs, data[name], "o-", color="#1f77b4", ms=4, label="training")
        val = data.get("val_" + name)
        if val is not None and np.any(np.isfinite(val)):
            ax.plot(epochs, val, "s--", color="#d62728", ms=4, label="validation")
        if name == "loss" and name in data:
            _mark_divergence(ax, epochs, data[name])
        ax.set_title("total loss" if name == "loss" else name.replace("_", " "), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[n:]:
        ax.set_axis_off()
    title = "Training losses: {} epoch{} (epochs {:g}-{:g})".format(
        len(epochs), "" if len(epochs) == 1 else "s", epochs[0], epochs[-1])
    if "lr" in data and np.isfinite(data["lr"][-1]):
        title += ", last learning rate {:g}".format(data["lr"][-1])
    if "seconds" in data and np.any(np.isfinite(data["seconds"])):
        title += ", {:.1f} h of training".format(np.nansum(data["seconds"]) / 3600.0)
    fig.suptitle(title, fontsize=12)
    png_path = os.fspath(png_path)
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    _save_figure(fig, png_path)
    return png_path
