"""COCO format of white-blood-cell ground truth and detections (RLE masks, pycocotools).

Record dicts are those of :mod:`wbc.evaluate`. :func:`to_coco_gt` and :func:`to_coco_results`
write COCO ground truth and results; :func:`load_coco_results` reads a results JSON back
into prediction dicts; :func:`gts_from_dataset` builds ground-truth dicts from a dataset;
:func:`prepare_records` pairs ground truth and predictions per image for scoring.
"""
import json
import math
import os

import numpy as np
from pycocotools import mask as mask_utils

from wbc.errors import UserError

SCHEMA = "wbc-evaluate/1"


def _encode(masks):
    """bool [H, W, N] -> N COCO RLEs with str counts (JSON-serialisable)."""
    if masks.shape[2] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks, dtype=np.uint8))
    for rle in rles:
        if isinstance(rle["counts"], bytes):
            rle["counts"] = rle["counts"].decode("ascii")
    return rles


def rle_boxes(rles):
    """COCO [x, y, w, h] float boxes [N, 4] of RLE masks."""
    if not rles:
        return np.zeros((0, 4))
    return np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)


# pycocotools 2.0.x's area() builds a uint8 array of the number of masks it is given: under NumPy 2
# a list of 256 or more fails with OverflowError (evaluate --tta can merge that many per image).
AREA_BATCH = 255


def _rle_areas(rles):
    """Pixel counts int64 [N] of N RLE masks, asked of pycocotools AREA_BATCH at a time."""
    areas = [np.asarray(mask_utils.area(rles[i:i + AREA_BATCH]), dtype=np.int64).reshape(-1)
             for i in range(0, len(rles), AREA_BATCH)]
    return np.concatenate(areas) if areas else np.zeros(0, np.int64)


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
        return rle_boxes(rles)
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4) if np.size(rois) else \
        np.zeros((0, 4))
    if rois.shape[0] != masks.shape[2]:
        raise UserError("{}: {} rois for {} masks".format(what, rois.shape[0], masks.shape[2]))
    y1, x1, y2, x2 = rois.T
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def prepare_records(gts, preds, num_classes):
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
               "gt_areas": _rle_areas(rles), "gt_boxes": rle_boxes(rles),
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


def coco_gt_dict(records, class_names):
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


def to_coco_gt(gts, class_names):
    """COCO ground-truth dict (images, RLE annotations with area and [x, y, w, h] bbox,
    categories 1..K named by class_names); JSON-serialisable."""
    return coco_gt_dict(prepare_records(gts, [], len(class_names)), class_names)


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
