"""One outline per cell: of two detections whose masks are mostly the same pixels, keep the
better scored.

Mask R-CNN suppresses overlapping detections class by class (Matterport, torchvision and
Detectron2 alike), so two regions over one cell that name it differently, each with a score
above the threshold, both survive: the cell is outlined twice and counted twice. With
per-class detections (DETECTION_PER_CLASS) one region can also give one detection per class
below a threshold of 0.5. A blood smear's white cells do not lie on top of each other, so a
detection whose mask overlaps a better one's with IoU > SAME_CELL_IOU is that cell again.
The same bar gathers a cell's detections across views and models in wbc.tta.

`detect` applies this to what it writes and counts; `evaluate` to the detections it matches,
counts and shows at its threshold. COCO AP still ranks every detection of every class.
"""
import numpy as np

from mrcnn.np_boxes import extract_bboxes

SAME_CELL_IOU = 0.5


def mask_iou_matrix(masks):
    """masks [H, W, N] (non-zero = inside) -> IoU float32 [N, N] of every pair.

    Only pairs whose boxes overlap are compared, each on their boxes' intersection: no float
    copy of the masks (H x W x N x 4 bytes), and little work when the cells are apart.
    """
    masks = np.asarray(masks, bool)
    boxes = extract_bboxes(masks)
    area = np.count_nonzero(masks, axis=(0, 1))
    top, left = (np.maximum(boxes[:, None, k], boxes[None, :, k]) for k in (0, 1))
    bottom, right = (np.minimum(boxes[:, None, k], boxes[None, :, k]) for k in (2, 3))
    iou = np.diag((area > 0).astype(np.float32))
    for i, j in zip(*np.nonzero(np.triu((top < bottom) & (left < right), k=1))):
        rows, cols = slice(top[i, j], bottom[i, j]), slice(left[i, j], right[i, j])
        inter = np.count_nonzero(masks[rows, cols, i] & masks[rows, cols, j])
        iou[i, j] = iou[j, i] = inter / (area[i] + area[j] - inter)
    return iou


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
