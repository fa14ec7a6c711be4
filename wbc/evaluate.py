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

COCO format: :func:`to_coco_gt` and :func:`to_coco_results` convert these dicts to COCO
ground truth and results (RLE masks); :func:`load_coco_results` reads a results JSON back
into prediction dicts; :func:`gts_from_dataset` builds ground-truth dicts from a dataset.

What is computed (:func:`evaluate`):

* COCO mask ("segm") and box ("bbox") AP by pycocotools on COCO-format ground truth and
  RLE results, over all detections whatever their score: AP (IoU 0.50:0.95), AP50, AP75,
  AP by cell size (``None`` when the subset has no true cell of that size), AR; per class
  AP and AP50 from COCOeval's precision array; the 101-point precision-recall curve per
  class at IoU 0.5.
* At the chosen confidence (detections with score >= ``min_confidence``): a greedy,
  one-to-one matching by mask IoU, highest score first, class ignored; a detection
  matches the unmatched true cell it overlaps most if their IoU >= ``iou_threshold``.
  From it: the confusion matrix (rows true class + "spurious", columns predicted class
  + "missed"), per class TP/FP/FN, precision, recall, F1 (a wrong class is a FN of the
  true class and a FP of the predicted one), Dice and IoU of the matched cells, and the
  per-image counts per class with their mean absolute errors (count and differential %).

Undefined figures (a class without true cells, no detections, no images) are ``None``
and written as ``null`` in metrics.json, "n/a" in report.md.
"""
import contextlib
import io
import json
import math
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wbc.errors import UserError

__all__ = [
    "DICE_GOOD", "to_coco_gt", "to_coco_results", "load_coco_results", "gts_from_dataset",
    "evaluate",
]

SCHEMA = "wbc-evaluate/1"
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


def _encode(masks):
    """bool [H, W, N] -> N COCO RLEs with str counts (JSON-serialisable)."""
    if masks.shape[2] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks, dtype=np.uint8))
    for rle in rles:
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _rle_boxes(rles):
    """COCO [x, y, w, h] float boxes [N, 4] of RLE masks."""
    if not rles:
        return np.zeros((0, 4))
    return np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)


def _rle_areas(rles):
    if not rles:
        return np.zeros(0, np.int64)
    return np.asarray(mask_utils.area(rles), dtype=np.int64).reshape(-1)


def _mask_rois(masks):
    """Boxes [N, 4] (y1, x1, y2, x2; exclusive ends) of bool masks [H, W, N]."""
    n = masks.shape[2]
    rois = np.zeros((n, 4), np.int64)
    for i in range(n):
        rows = np.flatnonzero(masks[:, :, i].any(axis=1))
        if rows.size:
            cols = np.flatnonzero(masks[:, :, i].any(axis=0))
            rois[i] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
    return rois


############################################################
#  Validation of the inputs
############################################################

def _instances(d, what, shape, num_classes, need_scores):
    """Validated (masks bool [H,W,N], class_ids int64 [N], scores float [N] or None)."""
    class_ids = np.asarray(d.get("class_ids", []) if d.get("class_ids") is not None else [])
    class_ids = class_ids.reshape(-1)
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(class_ids.astype(np.float64), 1), 0)):
            raise UserError("{}: class_ids must be whole numbers".format(what))
    class_ids = class_ids.astype(np.int64)
    masks = d.get("masks")
    if masks is None:
        if class_ids.size:
            raise UserError("{}: {} class ids but no masks".format(what, class_ids.size))
        masks = np.zeros(tuple(shape) + (0,), bool)
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UserError("{}: masks must be [H, W, N], got shape {}".format(what, masks.shape))
    if masks.size == 0 and masks.shape[2] == 0 and masks.shape[:2] != tuple(shape):
        masks = np.zeros(tuple(shape) + (0,), bool)   # an empty array of any size
    if masks.shape[:2] != tuple(shape):
        raise UserError("{}: masks are {}x{} but the image is {}x{}".format(
            what, masks.shape[0], masks.shape[1], shape[0], shape[1]))
    if masks.shape[2] != class_ids.size:
        raise UserError("{}: {} masks but {} class ids".format(
            what, masks.shape[2], class_ids.size))
    if masks.dtype != bool:
        masks = masks != 0
    bad = class_ids[(class_ids < 1) | (class_ids > num_classes)] if num_classes else []
    if len(bad):
        raise UserError("{}: class id {} is outside 1..{} (0 is background)".format(
            what, int(bad[0]), num_classes))
    scores = None
    if need_scores:
        raw = d.get("scores")
        scores = np.asarray([] if raw is None else raw, dtype=np.float64).reshape(-1)
        if scores.size != class_ids.size:
            raise UserError("{}: {} scores for {} detections".format(
                what, scores.size, class_ids.size))
        if not np.all(np.isfinite(scores)):
            raise UserError("{}: scores must be finite numbers".format(what))
    return masks, class_ids, scores


def _pred_boxes(pred, masks, rles, what):
    """COCO [x, y, w, h] boxes of a prediction: from its rois, else from its masks."""
    rois = pred.get("rois")
    if rois is None:
        return _rle_boxes(rles)
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4) if np.size(rois) else \
        np.zeros((0, 4))
    if rois.shape[0] != masks.shape[2]:
        raise UserError("{}: {} rois for {} masks".format(what, rois.shape[0], masks.shape[2]))
    y1, x1, y2, x2 = rois.T
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def _prepare(gts, preds, num_classes):
    """Per-image records holding validated arrays and their RLE encodings."""
    records, by_id = [], {}
    for n, gt in enumerate(gts):
        if "image_id" not in gt:
            raise UserError("ground truth #{}: no image_id".format(n))
        image_id = int(gt["image_id"])
        if image_id in by_id:
            raise UserError("ground truth: image_id {} appears twice".format(image_id))
        what = "ground truth of image {} ({})".format(image_id, gt.get("file_name", "?"))
        masks = gt.get("masks")
        if "height" in gt and "width" in gt:
            shape = (int(gt["height"]), int(gt["width"]))
        elif masks is not None:
            shape = tuple(np.shape(masks)[:2])
        else:
            raise UserError("{}: no height/width".format(what))
        masks, class_ids, _ = _instances(gt, what, shape, num_classes, False)
        rles = _encode(masks)
        rec = {"image_id": image_id, "file_name": str(gt.get("file_name", image_id)),
               "shape": shape, "gt_masks": masks, "gt_class": class_ids, "gt_rles": rles,
               "gt_areas": _rle_areas(rles), "gt_boxes": _rle_boxes(rles),
               "pr_masks": np.zeros(shape + (0,), bool), "pr_class": np.zeros(0, np.int64),
               "pr_scores": np.zeros(0), "pr_rles": [], "pr_areas": np.zeros(0, np.int64),
               "pr_boxes": np.zeros((0, 4)), "has_pred": False}
        by_id[image_id] = rec
        records.append(rec)
    for n, pred in enumerate(preds or []):
        if "image_id" not in pred:
            raise UserError("prediction #{}: no image_id".format(n))
        image_id = int(pred["image_id"])
        rec = by_id.get(image_id)
        if rec is None:
            raise UserError("prediction #{}: image_id {} is not in the ground truth ({} "
                            "images)".format(n, image_id, len(records)))
        if rec["has_pred"]:
            raise UserError("predictions: image_id {} appears twice".format(image_id))
        what = "prediction for image {} ({})".format(image_id, rec["file_name"])
        masks, class_ids, scores = _instances(pred, what, rec["shape"], num_classes, True)
        rles = _encode(masks)
        rec.update(pr_masks=masks, pr_class=class_ids, pr_scores=scores, pr_rles=rles,
                   pr_areas=_rle_areas(rles), pr_boxes=_pred_boxes(pred, masks, rles, what),
                   has_pred=True)
    return records


############################################################
#  COCO format
############################################################

def _categories(class_names):
    return [{"id": i, "name": str(name), "supercategory": "white blood cell"}
            for i, name in enumerate(class_names, start=1)]


def _coco_gt_dict(records, class_names):
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "file_name": rec["file_name"],
                       "height": rec["shape"][0], "width": rec["shape"][1]})
        for rle, c, area, box in zip(rec["gt_rles"], rec["gt_class"], rec["gt_areas"],
                                     rec["gt_boxes"]):
            annotations.append({
                "id": len(annotations) + 1,       # ids start at 1: COCOeval treats 0 as "none"
                "image_id": rec["image_id"], "category_id": int(c), "segmentation": rle,
                "area": float(area), "bbox": [float(v) for v in box], "iscrowd": 0})
    return {"info": {"description": "white blood cells", "schema": SCHEMA},
            "images": images, "annotations": annotations,
            "categories": _categories(class_names)}


def _coco_results_list(records):
    results = []
    for rec in records:
        for rle, c, s, box in zip(rec["pr_rles"], rec["pr_class"], rec["pr_scores"],
                                  rec["pr_boxes"]):
            results.append({"image_id": rec["image_id"], "category_id": int(c),
                            "score": float(s), "segmentation": rle,
                            "bbox": [float(v) for v in box]})
    return results


def to_coco_gt(gts, class_names):
    """COCO ground-truth dict (images, RLE annotations with area and [x, y, w, h] bbox,
    categories 1..K named by class_names); JSON-serialisable."""
    return _coco_gt_dict(_prepare(gts, [], len(class_names)), class_names)


def to_coco_results(preds):
    """COCO results list: one {"image_id", "category_id", "score", "segmentation" (RLE,
    str counts), "bbox" ([x, y, w, h])} per detection; "file_name" too when the
    prediction dict carries one. JSON-serialisable."""
    results = []
    for n, pred in enumerate(preds):
        if "image_id" not in pred:
            raise UserError("prediction #{}: no image_id".format(n))
        masks = pred.get("masks")
        shape = tuple(np.shape(masks)[:2]) if masks is not None else (0, 0)
        what = "prediction for image {}".format(pred["image_id"])
        masks, class_ids, scores = _instances(pred, what, shape, None, True)
        rles = _encode(masks)
        boxes = _pred_boxes(pred, masks, rles, what)
        for rle, c, s, box in zip(rles, class_ids, scores, boxes):
            entry = {"image_id": int(pred["image_id"]), "category_id": int(c),
                     "score": float(s), "segmentation": rle, "bbox": [float(v) for v in box]}
            if pred.get("file_name") is not None:
                entry["file_name"] = str(pred["file_name"])
            results.append(entry)
    return results


def _name_parts(name):
    return tuple(p for p in str(name).replace("\\", "/").split("/") if p not in ("", "."))


def _suffix_match(a, b):
    n = min(len(a), len(b))
    return n > 0 and a[-n:] == b[-n:]


def load_coco_results(path, gts, num_classes=None):
    """Read a COCO results JSON (as written by ``detect`` / :func:`to_coco_results`) into
    prediction dicts for the images of ``gts`` (one per ground-truth image, empty when
    the file has no detection for it).

    Entries are matched to images by "file_name" when they carry one (exact, or one path
    ending with the other, e.g. "Neutrophil/x.bmp" and "/data/val/image/Neutrophil/x.bmp"),
    else by "image_id". Segmentations may be compressed RLE, uncompressed RLE or polygons.
    Raises UserError naming the file when it is not a valid results list, references an
    image that is not in the dataset, or a mask does not fit its image.
    """
    path = os.fspath(path)
    fix = ("Give the COCO results file written by 'WBC.py detect' (a JSON list of "
           "{image_id, category_id, score, segmentation})")

    def fail(problem, hint=fix):
        return UserError("{}: {}. {}".format(path, problem, hint))

    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise fail("file not found", "Check the path") from None
    except OSError as e:
        raise fail("cannot read ({})".format(e.strerror or e), "Check the path") from None
    except (ValueError, UnicodeDecodeError) as e:   # JSONDecodeError is a ValueError
        raise fail("not a valid JSON file ({})".format(e)) from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        raise fail("this is a COCO ground-truth file, not a results list")
    if not isinstance(data, list):
        raise fail("expected a JSON list of detections, found a {}".format(type(data).__name__))

    gt_list = list(gts)
    by_id = {int(g["image_id"]): g for g in gt_list}
    by_base = {}
    for g in gt_list:
        parts = _name_parts(g.get("file_name", ""))
        if parts:
            by_base.setdefault(parts[-1].lower(), []).append((parts, g))
    name_cache = {}

    def find_by_name(name, image_id):
        key = (name, image_id)
        if key not in name_cache:
            parts = _name_parts(name)
            cands = [g for p, g in by_base.get(parts[-1].lower() if parts else "", [])
                     if p == parts] or \
                    [g for p, g in by_base.get(parts[-1].lower() if parts else "", [])
                     if _suffix_match(tuple(x.lower() for x in p),
                                      tuple(x.lower() for x in parts))]
            if len(cands) > 1 and image_id is not None:
                cands = [g for g in cands if int(g["image_id"]) == image_id] or cands
            name_cache[key] = cands
        return name_cache[key]

    per_image = {int(g["image_id"]): [] for g in gt_list}
    unknown = []
    for n, entry in enumerate(data):
        where = "entry #{}".format(n)
        if not isinstance(entry, dict):
            raise fail("{} is not an object".format(where))
        image_id = entry.get("image_id")
        if image_id is not None:
            if isinstance(image_id, bool) or not isinstance(image_id, (int, float, str)):
                raise fail("{}: image_id {!r} is not a number".format(where, image_id))
            try:
                image_id = int(image_id)
            except ValueError:
                raise fail("{}: image_id {!r} is not a number".format(where, image_id)) from None
        gt = None
        if entry.get("file_name") is not None:
            cands = find_by_name(entry["file_name"], image_id)
            if len(cands) > 1:
                raise fail("{}: file_name {!r} matches {} images of the dataset ({})".format(
                    where, entry["file_name"], len(cands),
                    ", ".join(str(g.get("file_name")) for g in cands[:3])),
                    "Write the path relative to the class folder, e.g. Neutrophil/x.bmp")
            if cands:
                gt = cands[0]
            else:
                unknown.append(repr(str(entry["file_name"])))
                continue
        elif image_id is not None:
            gt = by_id.get(image_id)
            if gt is None:
                unknown.append("image_id {}".format(image_id))
                continue
        else:
            raise fail("{} has neither image_id nor file_name".format(where))
        for key in ("category_id", "score", "segmentation"):
            if key not in entry:
                raise fail("{} has no {}".format(where, key))
        cat, score = entry["category_id"], entry["score"]
        if isinstance(cat, bool) or not isinstance(cat, (int, float)) or cat != int(cat):
            raise fail("{}: category_id {!r} is not a whole number".format(where, cat))
        if num_classes is not None and not 1 <= int(cat) <= num_classes:
            raise fail("{}: category_id {} is outside 1..{}".format(where, cat, num_classes))
        if isinstance(score, bool) or not isinstance(score, (int, float)) or \
                not math.isfinite(score):
            raise fail("{}: score {!r} is not a finite number".format(where, score))
        h, w = int(gt["height"]), int(gt["width"])
        rle = _entry_rle(entry["segmentation"], h, w, lambda p: fail("{}: {}".format(where, p)))
        bbox = entry.get("bbox")
        if bbox is not None:
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and
                    all(isinstance(v, (int, float)) for v in bbox)):
                raise fail("{}: bbox {!r} is not [x, y, w, h]".format(where, bbox))
        per_image[int(gt["image_id"])].append((rle, int(cat), float(score), bbox))
    if unknown:
        raise fail("{} detection(s) reference images that are not in the dataset (first: "
                   "{})".format(len(unknown), unknown[0]),
                   "Score the results against the dataset and subset they were detected on")

    preds = []
    for g in gt_list:
        image_id = int(g["image_id"])
        h, w = int(g["height"]), int(g["width"])
        items = per_image[image_id]
        if items:
            masks = mask_utils.decode([it[0] for it in items]).astype(bool).reshape(h, w, -1)
        else:
            masks = np.zeros((h, w, 0), bool)
        rois = _mask_rois(masks)
        for i, it in enumerate(items):
            if it[3] is not None:
                x, y, bw, bh = (float(v) for v in it[3])
                rois[i] = [int(round(y)), int(round(x)), int(round(y + bh)), int(round(x + bw))]
        preds.append({"image_id": image_id, "file_name": g.get("file_name"), "masks": masks,
                      "class_ids": np.array([it[1] for it in items], np.int32),
                      "scores": np.array([it[2] for it in items], np.float32),
                      "rois": rois.astype(np.int32)})
    return preds


def _entry_rle(seg, h, w, fail):
    """A compressed RLE (bytes counts) of size (h, w) from a results entry's segmentation."""
    try:
        if isinstance(seg, dict):
            size, counts = seg.get("size"), seg.get("counts")
            if not (isinstance(size, (list, tuple)) and len(size) == 2):
                raise fail("segmentation has no [height, width] size")
            if [int(size[0]), int(size[1])] != [h, w]:
                raise fail("mask is {}x{} but the image is {}x{}".format(size[0], size[1], h, w))
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects(seg, h, w)
            elif isinstance(counts, (str, bytes)):
                rle = {"size": [h, w],
                       "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            else:
                raise fail("segmentation counts must be a string or a list")
            if int(mask_utils.area(rle)) > h * w:
                raise fail("corrupt RLE counts")
            return rle
        if isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6
                                                  for p in seg):
            return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    except UserError:
        raise
    except Exception as e:  # pycocotools raises assorted errors on garbage
        raise fail("unreadable segmentation ({})".format(e)) from None
    raise fail("segmentation must be an RLE {size, counts} or a list of polygons")


def gts_from_dataset(dataset, image_ids=None):
    """Ground-truth dicts from a Matterport-style dataset (``load_mask``, ``image_info``;
    e.g. :class:`wbc.dataset.WBCDataset`). Images are not loaded: each dict carries the
    image's "path" for the pictures. file_name is "<Class>/<file>" when the dataset
    records the class folder, else the file's name."""
    ids = dataset.image_ids if image_ids is None else image_ids
    gts = []
    for image_id in ids:
        info = dataset.image_info[image_id]
        masks, class_ids = dataset.load_mask(image_id)
        path = info.get("path")
        base = os.path.basename(str(path)) if path is not None else str(info.get("id"))
        name = "{}/{}".format(info["class_name"], base) if info.get("class_name") else base
        gts.append({"image_id": int(image_id), "file_name": name, "path": path,
                    "height": int(masks.shape[0]), "width": int(masks.shape[1]),
                    "masks": masks, "class_ids": np.asarray(class_ids)})
    return gts


############################################################
#  Metrics
############################################################

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
                            "bbox": [float(v) for v in _rle_boxes([rle])[0]]})
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
    if len(order) and n_gt:
        ious = np.asarray(mask_utils.iou([rec["pr_rles"][j] for j in order], rec["gt_rles"],
                                         [0] * n_gt), dtype=np.float64).reshape(len(order), n_gt)
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
    records = _prepare(gts, preds, K)
    coco = _coco_section(records, class_names, _coco_gt_dict(records, class_names))

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
                       "dice_good": DICE_GOOD,
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
