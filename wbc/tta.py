"""Test-time augmentation and ensembles: detect on the 8 dihedral views of an image, with one
model or several, and merge the answers.

A microscope image has no up, down, left or right, so each of its 8 views (0-3 quarter turns,
each with and without a left-right mirror) is as good a question as the original. Every view
is detected on, its masks are turned back, and the detections of all views are merged:

- a cluster is a detection of the highest remaining score and every remaining detection whose
  mask overlaps it with IoU > 0.5 (SAME_CELL_IOU: the bar of one outline per cell);
- its score for a class is the summed score of its members of that class divided by the
  number of views asked (a cell named Neutrophil at 0.9 in 6 of 8 views scores 0.675);
- it gives one detection per class whose score reaches the threshold (as the model's own
  output does with DETECTION_PER_CLASS, WBCConfig's default, whose detections are the
  members; above 0.5 only one class can), with the pixels inside at least half of its
  members' masks.

An ensemble (several models trained apart, e.g. with different seeds) is merged the same
way: every (model, view) pair is one member, and the divisor is the number of members.
Detection takes as long as one detection per member; merging is cheap beside it.
"""
import numpy as np

from mrcnn.np_boxes import extract_bboxes
from wbc.outlines import SAME_CELL_IOU, mask_iou_matrix

VIEWS = tuple((turns, mirror) for turns in range(4) for mirror in (False, True))


def to_view(array, turns, mirror):
    """array [H, W, ...] -> the view: `turns` quarter turns, then a left-right mirror."""
    array = np.rot90(array, turns, axes=(0, 1))
    return array[:, ::-1] if mirror else array


def from_view(array, turns, mirror):
    """Undo to_view: an array [H', W', ...] of the view back in the original's frame."""
    array = array[:, ::-1] if mirror else array
    return np.rot90(array, -turns, axes=(0, 1))


def merge_detections(results, num_classes, min_confidence=0.0, max_instances=None):
    """Merge the results of (model, view) members: model.detect dicts, one per member (a
    member that found nothing still counts), masks already in the original's frame.

    Returns one dict like model.detect's: rois int32 [N, 4], class_ids int32 [N], scores
    float32 [N], masks bool [H, W, N]: one row per (cluster, class) of score >= min_confidence
    (and > 0), by score, the best `max_instances` of them (None: all).
    """
    masks = np.concatenate([r["masks"] for r in results], axis=-1).astype(bool, copy=False)
    class_ids = np.concatenate([r["class_ids"] for r in results]).astype(np.int64)
    scores = np.concatenate([r["scores"] for r in results]).astype(np.float64)
    iou = mask_iou_matrix(masks)
    free = np.ones(len(scores), bool)
    merged = []
    for seed in np.argsort(-scores, kind="stable"):
        if not free[seed]:
            continue
        members = np.flatnonzero(free & (iou[seed] > SAME_CELL_IOU))
        members = np.union1d(members, [seed])
        free[members] = False
        by_class = np.bincount(class_ids[members], scores[members], minlength=num_classes)
        by_class /= len(results)
        kept = np.flatnonzero((by_class >= min_confidence) & (by_class > 0))
        if len(kept):
            mask = masks[..., members].sum(axis=-1) * 2 >= len(members)
            merged += [(by_class[c], int(c), mask) for c in kept]
    merged.sort(key=lambda m: -m[0])
    merged = merged[:max_instances]
    shape = masks.shape[:2] + (len(merged),)
    out_masks = np.stack([m[2] for m in merged], axis=-1) if merged else np.zeros(shape, bool)
    return {"rois": extract_bboxes(out_masks).astype(np.int32),
            "class_ids": np.array([m[1] for m in merged], np.int32),
            "scores": np.array([m[0] for m in merged], np.float32),
            "masks": out_masks}


class MergedModel:
    """Models in inference mode (batch size 1) that answer detect() together: every model
    detects on every view, and the answers are merged (merge_detections).

    Build the models with a low DETECTION_MIN_CONFIDENCE (e.g. 0.05) so that a cell found at
    a modest score by some members still counts; `min_confidence` applies to the merged
    scores. Like a model's detect(), it keeps at most the first model's config
    DETECTION_MAX_INSTANCES detections per image, the best scored (8 views x N detections can
    merge into more than N). views=VIEWS is test-time augmentation; views=VIEWS[:1] (the
    image as it is) with several models is an ensemble.
    """

    def __init__(self, models, min_confidence, *, views):
        self.models, self.views = list(models), tuple(views)
        if not self.models or not self.views:
            raise ValueError("MergedModel needs at least one model and one view")
        classes = {m.config.NUM_CLASSES for m in self.models}
        if len(classes) > 1:
            raise ValueError(f"the models know different numbers of classes: {sorted(classes)}")
        self.config = self.models[0].config
        self.min_confidence = min_confidence or 0.0    # as in Config: 0 / None = no filter

    def detect(self, images, verbose=0):
        """Like MaskRCNN.detect: one result dict per image of `images` (a list of one)."""
        out = []
        for image in images:
            results = []
            for turns, mirror in self.views:
                view = np.ascontiguousarray(to_view(image, turns, mirror))
                for model in self.models:
                    r = model.detect([view], verbose=verbose)[0]
                    r["masks"] = from_view(r["masks"], turns, mirror)
                    results.append(r)
            out.append(merge_detections(results, self.config.NUM_CLASSES, self.min_confidence,
                                        self.config.DETECTION_MAX_INSTANCES))
        return out
