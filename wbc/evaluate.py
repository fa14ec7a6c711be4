"""Evaluation of white-blood-cell detections: the numbers a researcher needs.

Pure NumPy + pycocotools; this module never imports TensorFlow, so
``WBC.py evaluate --results detections.json`` can score a results file without a model.
Writing the numbers and pictures into files is :mod:`wbc.report`.

Inputs are plain dicts, one per image:

* ground truth ``{"image_id": int, "file_name": str, "height": H, "width": W,
  "masks": bool [H, W, N], "class_ids": int [N]}`` plus, optionally, ``"image"``
  (uint8 RGB [H, W, 3]) or ``"path"`` (an image file) for the pictures;
* prediction ``{"image_id": int, "masks": bool [H, W, M], "class_ids": int [M],
  "scores": float [M], "rois": int [M, 4]}`` (rois: y1, x1, y2, x2 with exclusive ends;
  optional, derived from the masks when absent). An image without a prediction dict has
  no detections.

Class ids run 1..K in the order of ``class_names`` (0 is background).

COCO format (:mod:`wbc.coco_format`, re-exported here): :func:`to_coco_gt` and
:func:`to_coco_results` convert these dicts to COCO ground truth and results (RLE masks);
:func:`load_coco_results` reads a results JSON back into prediction dicts;
:func:`gts_from_dataset` builds ground-truth dicts from a dataset.

What is computed (:func:`evaluate`):

* COCO mask ("segm") and box ("bbox") AP by pycocotools on COCO-format ground truth and
  RLE results, over all detections whatever their score: AP (IoU 0.50:0.95), AP50, AP75,
  AP by cell size (``None`` when the subset has no true cell of that size), AR; per class
  AP and AP50 from COCOeval's precision array; the 101-point precision-recall curve per
  class at IoU 0.5.
* At the chosen confidence (detections with score >= ``min_confidence``, less second
  outlines of a cell: :mod:`wbc.outlines`): a greedy, one-to-one matching by mask IoU,
  highest score first, class ignored; a detection matches the unmatched true cell it
  overlaps most if their IoU >= ``iou_threshold``.
  From it: the confusion matrix (rows true class + "spurious", columns predicted class
  + "missed"), per class TP/FP/FN, precision, recall, F1 (a wrong class is a FN of the
  true class and a FP of the predicted one), Dice and IoU of the matched cells, and the
  per-image counts per class with their mean absolute errors (count and differential %).

Undefined figures (a class without true cells, no detections, no images) are ``None``
and written as ``null`` in metrics.json, "n/a" in report.md.
"""
import contextlib
import io
import math

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wbc.coco_format import (SCHEMA, coco_gt_dict, gts_from_dataset,  # noqa: F401
                             load_coco_results, prepare_records, rle_boxes, to_coco_gt,
                             to_coco_results)
from wbc.errors import UserError
from wbc.outlines import SAME_CELL_IOU, one_per_cell

__all__ = [
    "DICE_GOOD", "to_coco_gt", "to_coco_results", "load_coco_results", "gts_from_dataset",
    "evaluate",
]

DICE_GOOD = 0.9      # "well outlined" cells have Dice >= this
SIZE_LABELS = ("small", "medium", "large")   # COCO: area < 32^2, < 96^2, >= 96^2 px


############################################################
#  Small helpers
############################################################

def _num(x):
    """float or None (NaN, inf and None become None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a, b):
    return float(a) / float(b) if b else None


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _jsonable(x):
    """Plain JSON types: numpy scalars/arrays converted, NaN and inf -> None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress on stdout: keep the CLI's output clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _coco_eval(coco_gt, dt_anns, iou_type):
    coco_dt = COCO()
    coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": dt_anns,
                       "categories": coco_gt.dataset["categories"]}
    coco_dt.createIndex()
    ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _coco_section(records, class_names, gt_dict):
    """COCO AP for masks and boxes, per class AP/AP50 and PR curves at IoU 0.5."""
    segm_dt, bbox_dt = [], []
    for rec in records:
        for rle, c, s, area, box in zip(rec["pr_rles"], rec["pr_class"], rec["pr_scores"],
                                        rec["pr_areas"], rec["pr_boxes"]):
            segm_dt.append({"id": len(segm_dt) + 1, "image_id": rec["image_id"],
                            "category_id": int(c), "score": float(s), "segmentation": rle,
                            "area": float(area), "iscrowd": 0,
                            "bbox": [float(v) for v in rle_boxes([rle])[0]]})
            box = [float(v) for v in box]
            bbox_dt.append({"id": len(bbox_dt) + 1, "image_id": rec["image_id"],
                            "category_id": int(c), "score": float(s), "bbox": box,
                            "area": box[2] * box[3], "iscrowd": 0})
    names = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
             "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large"]
    out = {}
    with _quiet():
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        for iou_type, dts in (("segm", segm_dt), ("bbox", bbox_dt)):
            if not records:
                out[iou_type] = {"summary": {k: None for k in names}, "per_class": {},
                                 "pr": {}}
                continue
            ev = _coco_eval(coco_gt, dts, iou_type)
            summary = {k: (None if v < 0 else float(v)) for k, v in zip(names, ev.stats)}
            prec = ev.eval["precision"]                       # [T, R, K, A, M]
            thrs = np.asarray(ev.params.iouThrs)
            t50 = int(np.argmin(np.abs(thrs - 0.5)))
            t75 = int(np.argmin(np.abs(thrs - 0.75)))
            a_all = list(ev.params.areaRngLbl).index("all")
            m_last = len(ev.params.maxDets) - 1
            per_class, pr = {}, {}
            for k, cat in enumerate(ev.params.catIds):
                p = prec[:, :, k, a_all, m_last]

                def ap(values):
                    values = values[values > -1]
                    return float(values.mean()) if values.size else None
                per_class[int(cat)] = {"AP": ap(p), "AP50": ap(p[t50]), "AP75": ap(p[t75])}
                pr[int(cat)] = None if np.all(p[t50] < 0) else [float(v) for v in p[t50]]
            out[iou_type] = {"summary": summary, "per_class": per_class, "pr": pr,
                             "recall_thresholds": [float(r) for r in ev.params.recThrs]}
    return out


def _match(rec, min_confidence, iou_threshold):
    """Greedy one-to-one matching at min_confidence, class ignored. Returns the per-image
    result with indices into the image's true cells and into all its detections."""
    n_gt = len(rec["gt_rles"])
    scores = rec["pr_scores"]
    keep = np.flatnonzero(scores >= min_confidence)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    rles = [rec["pr_rles"][j] for j in order]
    if len(order) > 1:                  # second outlines of a cell are not cells (outlines)
        same = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)), dtype=np.float64)
        kept = one_per_cell(same.reshape(len(order), len(order)))
        order, rles = order[kept], [rles[k] for k in kept]
    if len(order) and n_gt:
        ious = np.asarray(mask_utils.iou(rles, rec["gt_rles"], [0] * n_gt),
                          dtype=np.float64).reshape(len(order), n_gt)
    else:
        ious = np.zeros((len(order), n_gt))
    gt_taken = np.zeros(n_gt, bool)
    matched, spurious = [], []
    for row, j in enumerate(order):
        cand = np.where(gt_taken, -1.0, ious[row])
        i = int(np.argmax(cand)) if n_gt else -1
        if n_gt and cand[i] >= iou_threshold:
            gt_taken[i] = True
            iou = float(cand[i])
            a, b = int(rec["gt_areas"][i]), int(rec["pr_areas"][j])
            inter = int(round(iou * (a + b) / (1.0 + iou)))
            dice = 2.0 * inter / (a + b) if a + b else 0.0
            matched.append([i, int(j), iou, dice])
        else:
            spurious.append(int(j))
    missed = [int(i) for i in np.flatnonzero(~gt_taken)]
    wrong = sum(1 for i, j, _, _ in matched if rec["gt_class"][i] != rec["pr_class"][j])
    return {"matched": matched, "missed": missed, "spurious": spurious,
            "used": [int(j) for j in order], "misclassified": wrong}


def evaluate(gts, preds, class_names, min_confidence=0.7, iou_threshold=0.5):
    """Every figure of the evaluation (see the module docstring) as a JSON-ready dict.

    gts: ground-truth dicts; preds: prediction dicts (image_id must be one of the gts';
    an image without one has no detection). Raises UserError on inconsistent input
    (shapes, class ids outside 1..K, unknown or repeated image ids).
    """
    class_names = [str(c) for c in class_names]
    K = len(class_names)
    if K < 1:
        raise UserError("evaluate: no class names")
    min_confidence, iou_threshold = float(min_confidence), float(iou_threshold)
    if not 0.0 < iou_threshold <= 1.0:
        raise UserError("evaluate: iou_threshold must be in (0, 1], got {}".format(iou_threshold))
    records = prepare_records(gts, preds, K)
    coco = _coco_section(records, class_names, coco_gt_dict(records, class_names))

    confusion = np.zeros((K + 1, K + 1), np.int64)     # [true + spurious, pred + missed]
    per_image, pairs = [], []         # pairs: (true class, pred class, iou, dice)
    true_counts = np.zeros((len(records), K), np.int64)
    pred_counts = np.zeros((len(records), K), np.int64)
    for r, rec in enumerate(records):
        m = _match(rec, min_confidence, iou_threshold)
        gt_c, pr_c = rec["gt_class"], rec["pr_class"]
        for i, j, iou, dice in m["matched"]:
            confusion[gt_c[i] - 1, pr_c[j] - 1] += 1
            pairs.append((int(gt_c[i]), int(pr_c[j]), iou, dice))
        for i in m["missed"]:
            confusion[gt_c[i] - 1, K] += 1
        for j in m["spurious"]:
            confusion[K, pr_c[j] - 1] += 1
        true_counts[r] = np.bincount(gt_c - 1, minlength=K)[:K] if gt_c.size else 0
        used = pr_c[m["used"]]
        pred_counts[r] = np.bincount(used - 1, minlength=K)[:K] if used.size else 0
        errors = len(m["missed"]) + len(m["spurious"]) + m["misclassified"]
        per_image.append({
            "image_id": rec["image_id"], "file_name": rec["file_name"],
            "n_true": int(gt_c.size), "n_pred": int(len(m["used"])),
            "true_counts": {c: int(v) for c, v in zip(class_names, true_counts[r])},
            "pred_counts": {c: int(v) for c, v in zip(class_names, pred_counts[r])},
            "n_matched": len(m["matched"]), "n_missed": len(m["missed"]),
            "n_spurious": len(m["spurious"]), "n_misclassified": m["misclassified"],
            "errors": errors,
            "dice_mean": _mean([p[3] for p in m["matched"]]),
            "matched": [[i, j, round(iou, 6), round(dice, 6)]
                        for i, j, iou, dice in m["matched"]],
            "missed": m["missed"], "spurious": m["spurious"]})

    # --- detection (class ignored) and per class, from the confusion matrix
    n_matched = int(confusion[:K, :K].sum())
    n_missed = int(confusion[:K, K].sum())
    n_spurious = int(confusion[K, :K].sum())
    n_true = int(confusion[:K, :].sum())
    n_used = int(confusion[:, :K].sum())
    n_correct = int(np.trace(confusion[:K, :K]))

    def prf(tp, fp, fn):
        return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                "f1": _ratio(2 * tp, 2 * tp + fp + fn)}

    detection = {"matched": n_matched, "missed": n_missed, "spurious": n_spurious,
                 **prf(n_matched, n_spurious, n_missed),
                 "class_accuracy": _ratio(n_correct, n_matched)}
    micro = {"tp": n_correct, "fp": n_used - n_correct, "fn": n_true - n_correct,
             **prf(n_correct, n_used - n_correct, n_true - n_correct)}

    count_abs = np.abs(pred_counts - true_counts).astype(np.float64)
    t_tot, p_tot = true_counts.sum(1), pred_counts.sum(1)
    diff_rows = np.flatnonzero((t_tot > 0) & (p_tot > 0))
    if diff_rows.size:
        t_pct = 100.0 * true_counts[diff_rows] / t_tot[diff_rows, None]
        p_pct = 100.0 * pred_counts[diff_rows] / p_tot[diff_rows, None]
        diff_abs = np.abs(p_pct - t_pct)
    else:
        diff_abs = np.zeros((0, K))

    per_class = {}
    for k, name in enumerate(class_names):
        cid = k + 1
        tp = int(confusion[k, k])
        support = int(confusion[k, :].sum())
        n_pred = int(confusion[:, k].sum())
        dices = [p[3] for p in pairs if p[0] == cid]
        ious = [p[2] for p in pairs if p[0] == cid]
        segm = coco["segm"]["per_class"].get(cid, {})
        bbox = coco["bbox"]["per_class"].get(cid, {})
        per_class[name] = {
            "class_id": cid, "support": support, "n_predicted": n_pred,
            "tp": tp, "fp": n_pred - tp, "fn": support - tp,
            **prf(tp, n_pred - tp, support - tp),
            "mask_AP": segm.get("AP"), "mask_AP50": segm.get("AP50"),
            "mask_AP75": segm.get("AP75"),
            "box_AP": bbox.get("AP"), "box_AP50": bbox.get("AP50"),
            "n_matched": len(dices), "dice_mean": _mean(dices), "iou_mean": _mean(ious),
            "count_mae": float(count_abs[:, k].mean()) if len(records) else None,
            "differential_mae_pp": float(diff_abs[:, k].mean()) if diff_abs.shape[0] else None,
        }

    def macro(key):
        return _mean([v[key] for v in per_class.values() if v[key] is not None])

    dice_all = np.array([p[3] for p in pairs])
    segmentation = {
        "n_matched": int(dice_all.size),
        "dice_mean": float(dice_all.mean()) if dice_all.size else None,
        "dice_median": float(np.median(dice_all)) if dice_all.size else None,
        "iou_mean": _mean([p[2] for p in pairs]),
        "dice_good": DICE_GOOD,
        "frac_matched_dice_ge_good": _ratio(int((dice_all >= DICE_GOOD).sum()), dice_all.size),
        "frac_true_dice_ge_good": _ratio(int((dice_all >= DICE_GOOD).sum()), n_true),
    }
    true_total = true_counts.sum(0)
    pred_total = pred_counts.sum(0)
    counting = {
        "n_images": len(records),
        "count_mae_total": float(np.abs(p_tot - t_tot).mean()) if len(records) else None,
        "count_mae_per_class": {c: per_class[c]["count_mae"] for c in class_names},
        "count_mae_mean_over_classes": float(count_abs.mean()) if len(records) else None,
        "n_images_differential": int(diff_rows.size),
        "n_images_no_prediction": int(((t_tot > 0) & (p_tot == 0)).sum()),
        "differential_mae_pp_per_class": {c: per_class[c]["differential_mae_pp"]
                                          for c in class_names},
        "differential_mae_pp_mean_over_classes":
            float(diff_abs.mean()) if diff_abs.shape[0] else None,
        "totals_true": {c: int(v) for c, v in zip(class_names, true_total)},
        "totals_pred": {c: int(v) for c, v in zip(class_names, pred_total)},
        "pooled_pct_true": {c: _ratio(100.0 * v, true_total.sum())
                            for c, v in zip(class_names, true_total)},
        "pooled_pct_pred": {c: _ratio(100.0 * v, pred_total.sum())
                            for c, v in zip(class_names, pred_total)},
    }
    sizes = {lbl: 0 for lbl in SIZE_LABELS}
    for rec in records:
        for a in rec["gt_areas"]:
            sizes["small" if a < 32 ** 2 else "medium" if a < 96 ** 2 else "large"] += 1
    recall_thr = coco["segm"].get("recall_thresholds")
    metrics = {
        "schema": SCHEMA,
        "classes": class_names,
        "thresholds": {"min_confidence": min_confidence, "iou_threshold": iou_threshold,
                       "dice_good": DICE_GOOD, "same_cell_iou": SAME_CELL_IOU,
                       "coco_iou_thresholds": "0.50:0.05:0.95", "coco_max_dets": 100},
        "n_images": len(records),
        "n_true_cells": n_true,
        "n_true_by_size": sizes,
        "n_predictions": int(sum(len(r["pr_rles"]) for r in records)),
        "n_predictions_used": n_used,
        "coco": {"mask": coco["segm"]["summary"], "box": coco["bbox"]["summary"]},
        "per_class": per_class,
        "macro": {"precision": macro("precision"), "recall": macro("recall"),
                  "f1": macro("f1"), "mask_AP": macro("mask_AP"),
                  "mask_AP50": macro("mask_AP50"), "dice_mean": macro("dice_mean")},
        "micro": micro,
        "detection": detection,
        "confusion": {"rows": class_names + ["spurious"],
                      "columns": class_names + ["missed"],
                      "matrix": confusion.tolist(),
                      "note": "rows: true class; columns: predicted class; cells matched "
                              "at mask IoU >= iou_threshold, class ignored"},
        "segmentation": segmentation,
        "counting": counting,
        "pr_curves": {"iou": 0.5, "kind": "mask, COCO 101-point interpolated",
                      "recall": recall_thr,
                      "precision": {class_names[cid - 1]: curve
                                    for cid, curve in coco["segm"]["pr"].items()}},
        "per_image": per_image,
    }
    return _jsonable(metrics)
