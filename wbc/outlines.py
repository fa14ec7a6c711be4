"""One outline per cell: of two detections whose masks are mostly the same pixels, keep the
better scored.

Mask R-CNN suppresses overlapping detections class by class (Matterport, torchvision and
Detectron2 alike), so two regions over one cell that name it differently, each with a score
above the threshold, both survive: the cell is outlined twice and counted twice. With
per-class detections (DETECTION_PER_CLASS) one region can also give one detection per class
below a threshold of 0.5. A blood smear's white cells do not lie on top of each other, so a
detection whose mask overlaps a better one's with IoU > SAME_CELL_IOU is that cell again.

`detect` applies this to what it writes and counts; `evaluate` to the detections it matches,
counts and shows at its threshold. COCO AP still ranks every detection of every class.
"""
import numpy as np

from wbc.tta import mask_iou_matrix

SAME_CELL_IOU = 0.5


def one_per_cell(iou):
    """iou: float [N, N] mask IoU of N detections sorted best score first. Returns the
    positions (ascending) of those kept: each one whose IoU with every kept better one is
    at most SAME_CELL_IOU."""
    kept = []
    for k in range(len(iou)):
        if all(iou[k, j] <= SAME_CELL_IOU for j in kept):
            kept.append(k)
    return kept


def one_outline_per_cell(result):
    """A model.detect result dict (rois [N, 4], class_ids [N], scores [N], masks bool
    [H, W, N]) without its second outlines of a cell; rows best score first."""
    order = np.argsort(-np.asarray(result["scores"]), kind="stable")
    kept = order[one_per_cell(mask_iou_matrix(result["masks"])[np.ix_(order, order)])]
    return dict(result, rois=result["rois"][kept], class_ids=result["class_ids"][kept],
                scores=result["scores"][kept], masks=result["masks"][..., kept])
