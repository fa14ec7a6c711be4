"""Matterport's mask AP, matching and recall (re-exported by ``mrcnn.utils``). The product's
COCO AP comes from pycocotools (``wbc/evaluate.py``)."""
import numpy as np

from mrcnn.np_boxes import compute_overlaps, compute_overlaps_masks



def trim_zeros(x):
    """Drop the rows of a 2-D array that are all zero (zero padding).

    x: [N, C]. Returns [M, C] with M <= N, rows in their original order.
    """
    x = np.asarray(x)
    assert x.ndim == 2, "trim_zeros expects a 2-D array"
    return x[~np.all(x == 0, axis=1)]


def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Greedy matching of predictions to ground truth by **mask** IoU.

    gt_boxes: [G, 4] pixel boxes; all-zero rows are padding and are dropped
        together with their class id and mask.
    gt_class_ids: [G] ints. gt_masks: [H, W, G] any dtype.
    pred_boxes: [P, 4] (all-zero rows dropped likewise), pred_class_ids: [P],
    pred_scores: [P] floats, pred_masks: [H, W, P] any dtype.
    iou_threshold: minimum mask IoU of a match.
    score_threshold: predictions scoring below it are never matched.

    Predictions are sorted by decreasing score (stable). Each prediction, in
    that order, takes the unmatched GT with the highest IoU that has the same
    class, provided the IoU is >= iou_threshold (a GT of another class is
    skipped, not matched).

    Returns ``(gt_match, pred_match, overlaps)``:
        gt_match: int32 [G'] index (in score order) of the matched prediction, -1 = none.
        pred_match: int32 [P'] in score order: index of the matched GT, -1 = none.
        overlaps: float64 [P', G'] mask IoU, rows in score order.
    """
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes).reshape(-1, 4)
    gt_keep = ~np.all(gt_boxes == 0, axis=1)
    pred_keep = ~np.all(pred_boxes == 0, axis=1)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)[:len(gt_keep)][gt_keep].astype(np.int64)
    gt_masks = np.asarray(gt_masks)[..., :len(gt_keep)][..., gt_keep]
    pred_class_ids = np.asarray(pred_class_ids).reshape(-1)[:len(pred_keep)][pred_keep].astype(np.int64)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)[:len(pred_keep)][pred_keep]
    pred_masks = np.asarray(pred_masks)[..., :len(pred_keep)][..., pred_keep]

    order = np.argsort(-pred_scores, kind="stable")
    pred_class_ids = pred_class_ids[order]
    pred_scores = pred_scores[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    n_pred, n_gt = overlaps.shape
    pred_match = -np.ones(n_pred, dtype=np.int32)
    gt_match = -np.ones(n_gt, dtype=np.int32)
    for i in range(n_pred):
        if pred_scores[i] < score_threshold:
            continue
        for j in np.argsort(-overlaps[i], kind="stable"):
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision at one mask-IoU threshold (VOC all-point style).

    Arguments as in :func:`compute_matches`.
    Returns ``(mAP, precisions, recalls, overlaps)``:
        mAP: float, sum over recall steps of (recall step) x (interpolated
            precision), where the precision curve is made monotone
            non-increasing from the right.
        precisions: float64 [P'+2], interpolated, with sentinels 0 at both ends.
        recalls: float64 [P'+2], with sentinels 0 at the start and 1 at the end.
        overlaps: float64 [P', G'] mask IoU (score-sorted predictions).
    With no GT instance the AP is 1.0 if there is no prediction either and
    0.0 otherwise (every prediction is a false positive).
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    n_gt = len(gt_match)
    hits = np.cumsum(pred_match > -1).astype(np.float64)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    recalls = hits / max(n_gt, 1)
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    # Monotone precision: each point takes the max of all points to its right.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    if n_gt == 0:
        return (1.0 if len(pred_match) == 0 else 0.0), precisions, recalls, overlaps
    steps = np.where(recalls[1:] != recalls[:-1])[0] + 1
    m_ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return m_ap, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean AP over several mask-IoU thresholds.

    iou_thresholds: iterable of floats; default ``np.arange(0.5, 1.0, 0.05)``
        (0.50, 0.55, ..., 0.95, COCO style).
    verbose: print the AP at each threshold and the mean when > 0.
    Returns: float mean AP.
    """
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    aps = []
    for t in iou_thresholds:
        ap = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                        iou_threshold=t)[0]
        if verbose:
            print("AP @{:.2f}:\t {:.3f}".format(t, ap))
        aps.append(ap)
    mean_ap = float(np.mean(aps)) if aps else 0.0
    if verbose and aps:
        print("AP @{:.2f}-{:.2f}:\t {:.3f}".format(iou_thresholds[0], iou_thresholds[-1], mean_ap))
    return mean_ap


def compute_recall(pred_boxes, gt_boxes, iou):
    """Box recall of a set of predicted boxes (e.g. RPN proposals).

    pred_boxes: [P, 4], gt_boxes: [G, 4] in the same coordinates.
    iou: float IoU threshold.
    Returns ``(recall, positive_ids)``: recall = (number of distinct GT boxes
    that some prediction overlaps with IoU >= iou) / G (1.0 when G == 0);
    positive_ids = int indices of the predictions whose best IoU is >= iou.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)  # [P, G]
    n_pred, n_gt = overlaps.shape
    if n_gt == 0:
        return 1.0, np.zeros([0], dtype=np.int64)
    if n_pred == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    positive_ids = np.where(overlaps.max(axis=1) >= iou)[0]
    recalled = np.count_nonzero(overlaps.max(axis=0) >= iou)
    return recalled / n_gt, positive_ids
