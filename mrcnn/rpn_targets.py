"""RPN training targets (NumPy, pixel coordinates).

:func:`build_rpn_targets` labels every anchor as positive (1), negative (-1)
or neutral (0) and computes the box deltas of the sampled positive anchors,
following Matterport's rules (see the function docstring).
"""

import numpy as np

from mrcnn.utils import compute_overlaps

#: An anchor whose best IoU with the GT boxes is below this is negative.
NEGATIVE_IOU = 0.3
#: An anchor whose best IoU with the GT boxes is at least this is positive.
POSITIVE_IOU = 0.7
#: An anchor with an IoU >= this with a crowd box never becomes negative.
CROWD_IOU = 0.001


def build_rpn_targets(image_shape, anchors, gt_class_ids, gt_boxes, config, rng=None):
    """Anchor labels and box-delta targets for the RPN losses of one image.

    image_shape: [H, W, C] of the molded image (unused; kept for the API).
    anchors: [A, 4] anchors (y1, x1, y2, x2) in pixels (exclusive y2/x2),
        e.g. from ``utils.generate_pyramid_anchors``.
    gt_class_ids: [G] ints, any integer dtype; a negative id marks a COCO
        "crowd" box.
    gt_boxes: [G, 4] GT boxes (y1, x1, y2, x2) in pixels, any numeric dtype.
    config: needs ``RPN_TRAIN_ANCHORS_PER_IMAGE`` (int, T) and
        ``RPN_BBOX_STD_DEV`` (4 floats).
    rng: optional ``np.random.Generator`` (or seed) used to subsample the
        anchors; ``None`` uses ``np.random.default_rng()``.

    Rules:
      1. Crowd boxes are removed from the GT; anchors whose IoU with any
         crowd box is >= 0.001 are never negative.
      2. An anchor whose max IoU with the GT is < 0.3 is negative (-1).
      3. For each GT box, every anchor whose IoU equals that box's best IoU
         is positive (ties included; overrides rule 2). A GT box that no
         anchor overlaps at all (best IoU 0) makes no anchor positive.
      4. An anchor with max IoU >= 0.7 is positive (1).
      5. At most T // 2 positives are kept (random extras set to 0), then at
         most T - #positives negatives.
      6. The kept positives, in anchor order, get the deltas to their
         max-IoU GT box: ((gcy - acy) / ah, (gcx - acx) / aw, log(gh / ah),
         log(gw / aw)) / RPN_BBOX_STD_DEV.
    With no (non-crowd) GT box every anchor away from crowds is negative
    before the sampling.

    Returns:
        rpn_match: int32 [A], 1 positive / -1 negative / 0 neutral.
        rpn_bbox: float32 [T, 4], one row per positive anchor (in anchor
            order), zero rows after them.
    """
    rng = np.random.default_rng(rng)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1).astype(np.int64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if gt_class_ids.shape[0] != gt_boxes.shape[0]:
        raise ValueError("gt_class_ids has {} entries but gt_boxes has {} rows".format(
            gt_class_ids.shape[0], gt_boxes.shape[0]))
    train_anchors = int(config.RPN_TRAIN_ANCHORS_PER_IMAGE)
    std_dev = np.asarray(config.RPN_BBOX_STD_DEV, dtype=np.float64).reshape(4)
    num_anchors = anchors.shape[0]

    rpn_match = np.zeros([num_anchors], dtype=np.int32)
    rpn_bbox = np.zeros((train_anchors, 4), dtype=np.float32)

    # 1. Crowds: not targets, but they shield the anchors they touch from being negatives.
    crowd = gt_class_ids < 0
    if crowd.any():
        crowd_overlaps = compute_overlaps(anchors, gt_boxes[crowd])
        no_crowd = crowd_overlaps.max(axis=1) < CROWD_IOU
        gt_boxes = gt_boxes[~crowd]
    else:
        no_crowd = np.ones([num_anchors], dtype=bool)

    if gt_boxes.shape[0] > 0 and num_anchors > 0:
        overlaps = compute_overlaps(anchors, gt_boxes)  # [A, G]
        anchor_iou_argmax = overlaps.argmax(axis=1)
        anchor_iou_max = overlaps[np.arange(num_anchors), anchor_iou_argmax]
        # 2. Negatives.
        rpn_match[(anchor_iou_max < NEGATIVE_IOU) & no_crowd] = -1
        # 3. Best anchor(s) of each GT box, ties included.
        gt_iou_max = overlaps.max(axis=0)  # [G]
        best = (overlaps == gt_iou_max[None, :]) & (gt_iou_max[None, :] > 0)
        rpn_match[best.any(axis=1)] = 1
        # 4. High-IoU anchors.
        rpn_match[anchor_iou_max >= POSITIVE_IOU] = 1
    else:
        anchor_iou_argmax = np.zeros([num_anchors], dtype=np.int64)
        rpn_match[no_crowd] = -1

    # 5. Balance: at most half positives, the rest negatives.
    positive_ids = np.flatnonzero(rpn_match == 1)
    extra = positive_ids.size - train_anchors // 2
    if extra > 0:
        rpn_match[rng.choice(positive_ids, extra, replace=False)] = 0
    negative_ids = np.flatnonzero(rpn_match == -1)
    extra = negative_ids.size - (train_anchors - np.count_nonzero(rpn_match == 1))
    if extra > 0:
        rpn_match[rng.choice(negative_ids, extra, replace=False)] = 0

    # 6. Deltas of the kept positives to their max-IoU GT box.
    positive_ids = np.flatnonzero(rpn_match == 1)
    if positive_ids.size:
        a = anchors[positive_ids]
        g = gt_boxes[anchor_iou_argmax[positive_ids]]
        a_h = a[:, 2] - a[:, 0]
        a_w = a[:, 3] - a[:, 1]
        g_h = g[:, 2] - g[:, 0]
        g_w = g[:, 3] - g[:, 1]
        deltas = np.stack([
            ((g[:, 0] + 0.5 * g_h) - (a[:, 0] + 0.5 * a_h)) / a_h,
            ((g[:, 1] + 0.5 * g_w) - (a[:, 1] + 0.5 * a_w)) / a_w,
            np.log(g_h / a_h),
            np.log(g_w / a_w),
        ], axis=1)
        rpn_bbox[:positive_ids.size] = deltas / std_dev
    return rpn_match, rpn_bbox
