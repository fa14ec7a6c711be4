"""NumPy box arithmetic (part of Matterport's ``mrcnn.utils`` API, which re-exports it):
boxes of masks, box and mask overlaps, NMS, box deltas, anchors, normalized coordinates.

Conventions
-----------
* A box is ``(y1, x1, y2, x2)``.
* In **pixel** coordinates ``y2`` and ``x2`` are *exclusive*: the box
  ``(0, 0, 10, 10)`` covers rows 0..9 and columns 0..9, its height is
  ``y2 - y1 = 10`` and its area ``(y2 - y1) * (x2 - x1) = 100`` pixels.
* In **normalized** coordinates (see :func:`norm_boxes`) both corners are
  inclusive and ``0.0`` / ``1.0`` are the centres of the first / last pixel.
* Instance masks are ``[H, W, N]`` arrays (one channel per instance). Any
  dtype is accepted (bool, uint8 0/1 or 0/255, int); a pixel belongs to the
  instance when it is non-zero (``> 0.5`` for the mask-IoU functions).
* Class ids may arrive in any integer dtype; they are cast internally.
"""
import numpy as np

# Upper bound of elements per temporary array in compute_overlaps (~32 MB of float64).
_OVERLAP_CHUNK_ELEMENTS = 4_000_000


############################################################
#  Bounding boxes
############################################################

def extract_bboxes(mask):
    """Tight bounding boxes of instance masks.

    mask: [H, W, N] array of any dtype (bool, uint8, int, float); non-zero
        pixels belong to the instance.

    Returns: int32 [N, 4] boxes ``(y1, x1, y2, x2)`` in pixels, where y1/x1 are
    the first row/column that contains a pixel of the instance and y2/x2 are
    one past the last such row/column (exclusive). An instance without any
    pixel gets the box ``(0, 0, 0, 0)``. ``N == 0`` gives shape (0, 4).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError("extract_bboxes expects a [H, W, N] mask, got shape {}".format(mask.shape))
    h, w, n = mask.shape
    boxes = np.zeros((n, 4), dtype=np.int32)
    if n == 0 or h == 0 or w == 0:
        return boxes
    nonzero = mask != 0
    rows = nonzero.any(axis=1)  # [H, N]
    cols = nonzero.any(axis=0)  # [W, N]
    present = rows.any(axis=0)  # [N]
    y1 = rows.argmax(axis=0)
    y2 = h - rows[::-1].argmax(axis=0)
    x1 = cols.argmax(axis=0)
    x2 = w - cols[::-1].argmax(axis=0)
    boxes[:] = np.stack([y1, x1, y2, x2], axis=1)
    boxes[~present] = 0
    return boxes


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one box against many boxes.

    box: [4] ``(y1, x1, y2, x2)`` in pixels (exclusive y2/x2) or normalized.
    boxes: [N, 4] in the same coordinates.
    box_area: float, area of ``box`` computed by the caller as (y2-y1)*(x2-x1).
    boxes_area: [N] areas of ``boxes`` computed the same way.

    Returns: float64 [N] IoU in [0, 1]. Pairs whose union is 0 (two empty
    boxes) get 0.
    """
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = np.asarray(box_area, dtype=np.float64) + np.asarray(boxes_area, dtype=np.float64) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def compute_overlaps(boxes1, boxes2):
    """IoU matrix between two sets of boxes (vectorised).

    boxes1: [N1, 4], boxes2: [N2, 4] ``(y1, x1, y2, x2)``, both in the same
        coordinates (pixels with exclusive y2/x2, or normalized). Any numeric dtype.

    Returns: float64 [N1, N2] with ``overlaps[i, j] = IoU(boxes1[i], boxes2[j])``.
    Either set may be empty (result shape (0, N2) or (N1, 0)). The work is
    done in blocks of boxes2 so that a large anchor set (e.g. 261,888 anchors)
    against many boxes stays within a few tens of MB of temporaries.
    """
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    n1, n2 = b1.shape[0], b2.shape[0]
    overlaps = np.zeros((n1, n2), dtype=np.float64)
    if n1 == 0 or n2 == 0:
        return overlaps
    # Contiguous [N1, 1] columns broadcast fast against [chunk] rows of boxes2.
    y1a, x1a, y2a, x2a = (np.ascontiguousarray(b1[:, k])[:, None] for k in range(4))
    area1 = (y2a - y1a) * (x2a - x1a)
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    step = max(1, _OVERLAP_CHUNK_ELEMENTS // n1)
    for start in range(0, n2, step):
        c = b2[start:start + step]
        inter = np.minimum(y2a, c[:, 2])
        inter -= np.maximum(y1a, c[:, 0])
        np.maximum(inter, 0, out=inter)
        iw = np.minimum(x2a, c[:, 3])
        iw -= np.maximum(x1a, c[:, 1])
        np.maximum(iw, 0, out=iw)
        inter *= iw
        union = area1 + area2[start:start + step]
        union -= inter
        # Pairs with an empty union keep the 0 of the preallocated output.
        np.divide(inter, union, out=overlaps[:, start:start + step], where=union > 0)
    return overlaps


def compute_overlaps_masks(masks1, masks2):
    """IoU matrix between two sets of instance masks.

    masks1: [H, W, N1], masks2: [H, W, N2], any dtype; a pixel is "on" when
        its value is > 0.5 (so bool, 0/1 and 0/255 masks all work).

    Returns: float64 [N1, N2] mask IoU. If either set is empty the result is
    ``zeros((N1, N2))``. Pairs of two empty masks get 0.
    """
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2), dtype=np.float64)
    m1 = (masks1 > 0.5).reshape(-1, n1).astype(np.float32)
    m2 = (masks2 > 0.5).reshape(-1, n2).astype(np.float32)
    area1 = m1.sum(axis=0, dtype=np.float64)
    area2 = m2.sum(axis=0, dtype=np.float64)
    # float32 sums of 0/1 values are exact below 2**24 pixels (4096 x 4096).
    inter = (m1.T @ m2).astype(np.float64)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(boxes, scores, threshold):
    """Greedy non-maximum suppression.

    boxes: [N, 4] ``(y1, x1, y2, x2)`` (pixels or normalized), N > 0.
    scores: [N] box scores (higher is better).
    threshold: float IoU; a box whose IoU with an already kept box is
        strictly greater than ``threshold`` is removed.

    Returns: int32 [K] indices (into ``boxes``) of the kept boxes, in order of
    decreasing score. Equal scores are visited in index order (stable).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    assert boxes.shape[0] > 0, "non_max_suppression needs at least one box"
    assert boxes.shape[0] == scores.shape[0], "boxes and scores must have the same length"
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-scores, kind="stable")
    pick = []
    while order.size > 0:
        i = order[0]
        pick.append(i)
        rest = order[1:]
        iou = compute_iou(boxes[i], boxes[rest], area[i], area[rest])
        order = rest[iou <= threshold]
    return np.array(pick, dtype=np.int32)


def apply_box_deltas(boxes, deltas):
    """Apply regression deltas to boxes (inverse of :func:`box_refinement`).

    boxes: [N, 4] ``(y1, x1, y2, x2)`` (pixels or normalized).
    deltas: [N, 4] ``(dy, dx, log(dh), log(dw))``: dy/dx are the centre shift
        in units of the box height/width, dh/dw the height/width factors.
        Deltas are *not* divided by any std dev here.

    Returns: float32 [N, 4] refined boxes in the coordinates of ``boxes``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    deltas = np.asarray(deltas, dtype=np.float64).reshape(-1, 4)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * np.exp(deltas[:, 2])
    width = width * np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1).astype(np.float32)


def box_refinement(box, gt_box):
    """Deltas that turn ``box`` into ``gt_box``.

    box, gt_box: [N, 4] ``(y1, x1, y2, x2)`` in the same coordinates (pixels
        or normalized); boxes must have non-zero height and width.

    Returns: float32 [N, 4] ``(dy, dx, log(dh), log(dw))`` with
    ``dy = (gt_cy - cy) / h``, ``dx = (gt_cx - cx) / w``,
    ``dh = gt_h / h``, ``dw = gt_w / w`` (no std-dev normalisation).
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    gt_box = np.asarray(gt_box, dtype=np.float64).reshape(-1, 4)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1).astype(np.float32)


############################################################
#  Anchors
############################################################

def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one feature map level, in pixel coordinates.

    scales: anchor side(s) in pixels, a scalar or 1-D (e.g. 32).
    ratios: width/height ratios, e.g. [0.5, 1, 2]. For each (scale, ratio):
        height = scale / sqrt(ratio), width = scale * sqrt(ratio).
    shape: (rows, cols) of the feature map.
    feature_stride: pixels per feature-map cell (4 for P2 ... 64 for P6).
    anchor_stride: step, in cells, between anchor locations (usually 1).

    Anchor centres are at ``(y * feature_stride, x * feature_stride)`` for
    the cells ``y = 0, anchor_stride, ...`` (no half-stride offset).
    Returns: float64 [rows' * cols' * K, 4] boxes (y1, x1, y2, x2), ordered
    row-major over locations (y, then x), then over the K shapes: ratio
    major, scale minor (K = len(ratios) for a single scale).
    """
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    ratios = np.asarray(ratios, dtype=np.float64).reshape(-1)
    ratio_grid, scale_grid = np.meshgrid(ratios, scales, indexing="ij")
    heights = (scale_grid / np.sqrt(ratio_grid)).reshape(-1)  # [K]
    widths = (scale_grid * np.sqrt(ratio_grid)).reshape(-1)

    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    cy, cx = np.meshgrid(shifts_y, shifts_x, indexing="ij")  # [rows, cols]
    cy = cy.reshape(-1, 1).astype(np.float64)  # [L, 1]
    cx = cx.reshape(-1, 1).astype(np.float64)
    boxes = np.stack([cy - 0.5 * heights, cx - 0.5 * widths,
                      cy + 0.5 * heights, cx + 0.5 * widths], axis=-1)  # [L, K, 4]
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    """Anchors of all pyramid levels, concatenated level by level.

    scales: one anchor size per level, e.g. (32, 64, 128, 256, 512) for P2..P6.
    ratios: width/height ratios shared by all levels, e.g. [0.5, 1, 2].
    feature_shapes: [levels, 2] (rows, cols) per level, e.g. ceil(1024 / stride).
    feature_strides: pixels per cell per level, e.g. [4, 8, 16, 32, 64].
    anchor_stride: step in cells between anchor locations.

    Returns: float64 [A, 4] anchors (y1, x1, y2, x2) in pixels; level P2
    first, each level ordered as in :func:`generate_anchors`. With the COCO
    defaults at 1024x1024, A = 261,888.
    """
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


############################################################
#  Normalized coordinates
############################################################

def norm_boxes(boxes, shape):
    """Pixel boxes -> normalized boxes.

    boxes: [..., 4] (y1, x1, y2, x2) in pixels (exclusive y2/x2).
    shape: (height, width[, ...]) of the image in pixels.
    Returns: float32 [..., 4] ``(boxes - [0, 0, 1, 1]) / [h-1, w-1, h-1, w-1]``
    (inclusive corners; 0 and 1 are the first and last pixel centres).
    """
    h, w = shape[0], shape[1]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Normalized boxes -> pixel boxes (inverse of :func:`norm_boxes`).

    boxes: [..., 4] normalized (y1, x1, y2, x2).
    shape: (height, width[, ...]) in pixels.
    Returns: int32 [..., 4] ``round(boxes * [h-1, w-1, h-1, w-1] + [0, 0, 1, 1])``
    (exclusive y2/x2).
    """
    h, w = shape[0], shape[1]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return np.around(np.asarray(boxes, dtype=np.float64) * scale + shift).astype(np.int32)
