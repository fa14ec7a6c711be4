"""TensorFlow box arithmetic shared by the proposal, target and detection layers.

Boxes are (y1, x1, y2, x2). Normalized coordinates follow Matterport: a pixel box
(y1, x1, y2, x2) with exclusive y2/x2 maps to ((y1, x1, y2 - 1, x2 - 1) / (H - 1, W - 1)).
Deltas are (dy, dx, log dh, log dw) relative to the box centre and size.
"""
import math

import tensorflow as tf


# Largest log-scale change applied to a box (as torchvision): keeps an untrained or diverging
# network's exp(dh) finite instead of turning proposals into inf / NaN.
MAX_LOG_SCALE = math.log(1000. / 16.)


def apply_box_deltas_graph(boxes, deltas):
    """boxes [..., 4], deltas [..., 4] (already multiplied by the std dev) -> boxes [..., 4]."""
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height + deltas[..., 0] * height
    center_x = boxes[..., 1] + 0.5 * width + deltas[..., 1] * width
    height = height * tf.exp(tf.minimum(deltas[..., 2], MAX_LOG_SCALE))
    width = width * tf.exp(tf.minimum(deltas[..., 3], MAX_LOG_SCALE))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return tf.stack([y1, x1, y1 + height, x1 + width], axis=-1)


def clip_boxes_graph(boxes, window):
    """Clip boxes [..., 4] to window (y1, x1, y2, x2) broadcastable to boxes[..., 0]."""
    wy1, wx1, wy2, wx2 = tf.unstack(tf.cast(window, boxes.dtype), axis=-1)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    wy1, wx1, wy2, wx2 = [tf.expand_dims(w, -1) if w.shape.rank else w
                          for w in (wy1, wx1, wy2, wx2)]
    y1 = tf.clip_by_value(y1, wy1, wy2)
    x1 = tf.clip_by_value(x1, wx1, wx2)
    y2 = tf.clip_by_value(y2, wy1, wy2)
    x2 = tf.clip_by_value(x2, wx1, wx2)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def box_refinement_graph(box, gt_box):
    """Deltas [N, 4] that turn box [N, 4] into gt_box [N, 4]."""
    h = box[:, 2] - box[:, 0]
    w = box[:, 3] - box[:, 1]
    gh = gt_box[:, 2] - gt_box[:, 0]
    gw = gt_box[:, 3] - gt_box[:, 1]
    dy = (gt_box[:, 0] + 0.5 * gh - box[:, 0] - 0.5 * h) / h
    dx = (gt_box[:, 1] + 0.5 * gw - box[:, 1] - 0.5 * w) / w
    return tf.stack([dy, dx, tf.math.log(gh / h), tf.math.log(gw / w)], axis=1)


def overlaps_graph(boxes1, boxes2):
    """IoU matrix [N1, N2] of boxes1 [N1, 4] against boxes2 [N2, 4]."""
    b1 = tf.expand_dims(boxes1, 1)
    b2 = tf.expand_dims(boxes2, 0)
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    inter = tf.maximum(y2 - y1, 0.) * tf.maximum(x2 - x1, 0.)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return inter / tf.maximum(area1 + area2 - inter, 1e-12)


def norm_boxes_graph(boxes, shape):
    """Pixel boxes [..., 4] -> normalized, for an image of shape (H, W)."""
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - 1.
    return (boxes - tf.constant([0., 0., 1., 1.])) / scale


def denorm_boxes_graph(boxes, shape):
    """Normalized boxes [..., 4] -> int32 pixel boxes, for an image of shape (H, W)."""
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - 1.
    return tf.cast(tf.round(boxes * scale + tf.constant([0., 0., 1., 1.])), tf.int32)


def trim_zeros_graph(boxes, name="trim_zeros"):
    """Drop all-zero padding rows of boxes [N, 4]; returns (boxes [M, 4], keep bool [N])."""
    keep = tf.cast(tf.reduce_sum(tf.abs(boxes), axis=1), tf.bool)
    return tf.boolean_mask(boxes, keep, name=name), keep


def batch_pack_graph(x, counts, num_rows):
    """Rows of x [num_rows, N, ...] packed into one tensor [sum(counts), ...]: the first
    counts[i] entries of row i, for i < num_rows (Matterport's helper; counts [num_rows] int)."""
    return tf.concat([x[i, :counts[i]] for i in range(num_rows)], axis=0)


def pad_rows(x, rows):
    """Zero-pad tensor x [N, ...] at the end of axis 0 to exactly `rows` rows (N <= rows)."""
    n = tf.shape(x)[0]
    paddings = [[0, tf.maximum(rows - n, 0)]] + [[0, 0]] * (x.shape.rank - 1)
    out = tf.pad(x[:rows], paddings)
    return tf.ensure_shape(out, [rows] + x.shape.as_list()[1:])
