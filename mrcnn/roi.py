"""Layers that work on regions of interest: pyramid ROIAlign, training targets, detections.

All boxes here are normalized (see box_ops). Shapes:
  PyramidROIAlign([boxes [B, R, 4], image_meta [B, M], P2, P3, P4, P5]) -> [B, R, ph, pw, D]
  DetectionTargetLayer([proposals [B, N, 4], gt_class_ids [B, G], gt_boxes [B, G, 4],
                        gt_masks [B, mh, mw, G]])
      -> rois [B, T, 4], class_ids [B, T] int32, deltas [B, T, 4], masks [B, P, 28, 28]
     with T = TRAIN_ROIS_PER_IMAGE and P = int(T * ROI_POSITIVE_RATIO): positives come first,
     so masks only exist for the first P ROIs (the mask head runs on those alone).
  DetectionLayer([rois [B, R, 4], probs [B, R, NC], deltas [B, R, NC, 4], image_meta])
      -> detections [B, DETECTION_MAX_INSTANCES, 6] rows (y1, x1, y2, x2, class_id, score):
     one per ROI (its top class) or, with DETECTION_PER_CLASS, one per (ROI, class).
"""
import tensorflow as tf
from mrcnn.box_ops import (apply_box_deltas_graph, box_refinement_graph, clip_boxes_graph,
                           overlaps_graph, pad_rows, trim_zeros_graph)
from mrcnn.precision import Float32Layer


def parse_image_meta_graph(meta):
    """Split image_meta [B, M] into its named parts (see data.compose_image_meta)."""
    return {
        "image_id": meta[:, 0],
        "original_image_shape": meta[:, 1:4],
        "image_shape": meta[:, 4:7],
        "window": meta[:, 7:11],
        "scale": meta[:, 11],
        "active_class_ids": meta[:, 12:],
    }


def log2_graph(x):
    return tf.math.log(x) / tf.math.log(2.0)


def positive_roi_count(config):
    """Slots reserved for positive ROIs per image: int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)."""
    return int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)


def mask_roi_count(config):
    """Leading positive slots the mask head trains on: positive_roi_count(config), at most
    config.MASK_ROIS_PER_IMAGE (None: no limit). ValueError for a limit under 1."""
    limit = getattr(config, "MASK_ROIS_PER_IMAGE", None)
    if limit is None:
        return positive_roi_count(config)
    if int(limit) != limit or limit < 1:
        raise ValueError(f"MASK_ROIS_PER_IMAGE must be None or a whole number >= 1, not {limit!r}")
    return min(positive_roi_count(config), int(limit))


class LeadingRows(Float32Layer):
    """Cut [B, N, ...] tensors to their first k rows, k = the largest number of valid rows
    of any image (at least 1), where valid rows come first in every image.

    Inputs: [valid [B, N] (> 0 means valid), t1 [B, N, ...], t2 ...]; outputs [t1[:, :k], ...].
    The mask head runs on these rows only: positive ROIs in training, real detections at
    inference, instead of every reserved slot.
    """

    def call(self, inputs):
        valid, tensors = inputs[0], inputs[1:]
        counts = tf.reduce_sum(tf.cast(valid > 0, tf.int32), axis=1)
        k = tf.maximum(tf.reduce_max(counts), 1)
        return [t[:, :k] for t in tensors]

    def compute_output_shape(self, input_shape):
        return [(s[0], None) + tuple(s[2:]) for s in input_shape[1:]]


class PadRowsTo(Float32Layer):
    """Undo LeadingRows: zero-pad [B, k, ...] to [B, rows, ...] along axis 1 and zero every
    row that is not valid, so rows without a detection hold 0 even where LeadingRows kept them
    (k >= 1 when no row is valid; an image with fewer valid rows than another in its batch).

    Inputs: [x [B, k, ...], valid [B, rows] (> 0 means valid)]; output [B, rows, ...].
    """

    def __init__(self, rows, **kwargs):
        super().__init__(**kwargs)
        self.rows = rows

    def call(self, inputs):
        x, valid = inputs
        pad = tf.concat([[[0, 0], [0, self.rows - tf.shape(x)[1]]],
                         tf.zeros([len(x.shape) - 2, 2], tf.int32)], 0)
        keep = tf.cast(valid > 0, x.dtype)[(...,) + (None,) * (len(x.shape) - 2)]
        return tf.pad(x, pad) * keep

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.rows) + tuple(input_shape[0][2:])


class PyramidROIAlign(Float32Layer):
    """Crop-and-resize each box from the pyramid level that suits its size.

    level = clip(4 + round(log2(sqrt(h * w) / canonical_size)), min_level, 5) with h, w in
    pixels (canonical_size 224 as in Matterport and the FPN paper: a 224 px box comes from P4);
    one bilinear sample per output cell (tf.image.crop_and_resize), as in Matterport.
    `feature_maps` are given from `min_level` upwards to P5.
    """

    def __init__(self, pool_shape, min_level=2, canonical_size=224, **kwargs):
        super().__init__(**kwargs)
        self.pool_shape = tuple(pool_shape)
        self.min_level = min_level
        self.canonical_size = float(canonical_size)

    def call(self, inputs):
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = inputs[2:]
        batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
        flat = tf.stop_gradient(tf.reshape(boxes, [-1, 4]))
        box_batch = tf.repeat(tf.range(batch), rois)
        image_shape = image_meta[0, 4:6]
        h = flat[:, 2] - flat[:, 0]
        w = flat[:, 3] - flat[:, 1]
        image_area = image_shape[0] * image_shape[1]
        level = 4. + tf.round(log2_graph(tf.sqrt(h * w * image_area) / self.canonical_size))
        level = tf.clip_by_value(level, self.min_level, self.min_level + len(feature_maps) - 1)
        part = tf.cast(level, tf.int32) - self.min_level
        n_levels = len(feature_maps)
        box_parts = tf.dynamic_partition(flat, part, n_levels)
        batch_parts = tf.dynamic_partition(box_batch, part, n_levels)
        index_parts = tf.dynamic_partition(tf.range(tf.shape(flat)[0]), part, n_levels)
        pooled = [tf.image.crop_and_resize(fmap, b, bi, self.pool_shape, method="bilinear")
                  for fmap, b, bi in zip(feature_maps, box_parts, batch_parts)]
        pooled = tf.dynamic_stitch(index_parts, pooled)
        depth = feature_maps[0].shape[-1]
        return tf.reshape(pooled, tf.concat([[batch, rois], self.pool_shape, [depth]], 0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:2]) + self.pool_shape + (input_shape[2][-1],)


def detection_targets_graph(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Sample ROIs of one image and build their targets (see DetectionTargetLayer).

    proposals [N, 4], gt_class_ids [G] int, gt_boxes [G, 4], gt_masks [mh, mw, G] bool,
    all zero-padded. Returns rois [T, 4], class_ids [T] int32, deltas [T, 4], masks [P, 28, 28].
    """
    num_rois = config.TRAIN_ROIS_PER_IMAGE
    num_pos = positive_roi_count(config)
    proposals, _ = trim_zeros_graph(proposals, name="trim_proposals")
    gt_boxes, nonzero = trim_zeros_graph(gt_boxes, name="trim_gt_boxes")
    gt_class_ids = tf.boolean_mask(gt_class_ids, nonzero)
    gt_masks = tf.boolean_mask(tf.transpose(gt_masks, [2, 0, 1]), nonzero)  # [G, mh, mw]

    crowd = gt_class_ids < 0
    crowd_boxes = tf.boolean_mask(gt_boxes, crowd)
    gt_boxes = tf.boolean_mask(gt_boxes, ~crowd)
    gt_class_ids = tf.boolean_mask(gt_class_ids, ~crowd)
    gt_masks = tf.boolean_mask(gt_masks, ~crowd)

    if config.PROPOSALS_INCLUDE_GT:
        proposals = tf.concat([proposals, gt_boxes], axis=0)
    overlaps = overlaps_graph(proposals, gt_boxes)
    roi_iou_max = tf.reduce_max(tf.concat([overlaps, tf.zeros_like(overlaps[:, :1]) - 1.], 1), 1)
    crowd_iou = overlaps_graph(proposals, crowd_boxes)
    crowd_iou_max = tf.reduce_max(tf.concat([crowd_iou, tf.zeros_like(crowd_iou[:, :1])], 1), 1)
    positive = tf.where(roi_iou_max >= 0.5)[:, 0]
    negative = tf.where((roi_iou_max < 0.5) & (crowd_iou_max < 0.001))[:, 0]

    positive = tf.random.shuffle(positive)[:num_pos]
    pos_count = tf.shape(positive)[0]
    neg_count = tf.cast(tf.cast(pos_count, tf.float32) / config.ROI_POSITIVE_RATIO, tf.int32) - pos_count
    neg_count = tf.where(pos_count > 0, neg_count, num_rois)
    negative = tf.random.shuffle(negative)[:tf.minimum(neg_count, num_rois - pos_count)]
    pos_rois = tf.gather(proposals, positive)
    neg_rois = tf.gather(proposals, negative)

    pos_overlaps = tf.gather(overlaps, positive)
    assignment = tf.argmax(tf.concat([pos_overlaps, tf.zeros_like(pos_overlaps[:, :1]) - 1.], 1), 1)
    assignment = tf.minimum(assignment, tf.cast(tf.maximum(tf.shape(gt_boxes)[0] - 1, 0), tf.int64))
    roi_gt_boxes = tf.gather(gt_boxes, assignment)
    roi_gt_class_ids = tf.gather(gt_class_ids, assignment)
    deltas = box_refinement_graph(pos_rois, roi_gt_boxes)
    deltas /= tf.constant(config.BBOX_STD_DEV, tf.float32)

    roi_masks = tf.expand_dims(tf.cast(tf.gather(gt_masks, assignment), tf.float32), -1)
    boxes = pos_rois
    if config.USE_MINI_MASK:
        # Express each ROI in the frame of its GT box, where the mini mask lives.
        gy1, gx1, gy2, gx2 = tf.split(roi_gt_boxes, 4, axis=1)
        y1, x1, y2, x2 = tf.split(pos_rois, 4, axis=1)
        gh, gw = gy2 - gy1, gx2 - gx1
        boxes = tf.concat([(y1 - gy1) / gh, (x1 - gx1) / gw, (y2 - gy1) / gh, (x2 - gx1) / gw], 1)
    masks = tf.image.crop_and_resize(roi_masks, boxes, tf.range(tf.shape(boxes)[0]),
                                     config.MASK_SHAPE)
    masks = tf.round(tf.squeeze(masks, -1))

    rois = pad_rows(tf.concat([pos_rois, neg_rois], 0), num_rois)
    class_ids = pad_rows(tf.cast(roi_gt_class_ids, tf.int32), num_rois)
    deltas = pad_rows(deltas, num_rois)
    masks = pad_rows(masks, num_pos)
    return rois, class_ids, deltas, masks


class DetectionTargetLayer(Float32Layer):
    """Sample TRAIN_ROIS_PER_IMAGE proposals per image (ROI_POSITIVE_RATIO positive, IoU >= 0.5
    with a GT box) and build their class, box-delta and mask targets. GT boxes and proposals
    arrive normalized; outputs are listed in the module docstring."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config

    def call(self, inputs):
        c = self.config
        num_pos = positive_roi_count(c)
        specs = (tf.TensorSpec([c.TRAIN_ROIS_PER_IMAGE, 4], tf.float32),
                 tf.TensorSpec([c.TRAIN_ROIS_PER_IMAGE], tf.int32),
                 tf.TensorSpec([c.TRAIN_ROIS_PER_IMAGE, 4], tf.float32),
                 tf.TensorSpec([num_pos] + list(c.MASK_SHAPE), tf.float32))
        return tf.map_fn(lambda a: detection_targets_graph(*a, config=c),
                         tuple(inputs), fn_output_signature=specs)

    def compute_output_spec(self, inputs):
        from keras import KerasTensor
        c = self.config
        batch = inputs[0].shape[0]
        t = c.TRAIN_ROIS_PER_IMAGE
        return [KerasTensor((batch, t, 4)), KerasTensor((batch, t), dtype="int32"),
                KerasTensor((batch, t, 4)),
                KerasTensor((batch, positive_roi_count(c)) + tuple(c.MASK_SHAPE))]


def detection_candidates(probs, deltas, per_class):
    """Candidate detections of one image's R ROIs, probs [R, NC], deltas [R, NC, 4] ->
    (roi index int32 [C], class id int32 [C], score [C], that class's deltas [C, 4]).

    per_class False (Matterport): one candidate per ROI, of its most probable class (0 where
    that is the background; the caller drops those), C = R. True (torchvision, Detectron2):
    one per (ROI, class) pair of every class but the background, so a cell whose right class
    is its second choice still has a detection of that class for AP to rank, C = R * (NC - 1).
    """
    if per_class:
        num_rois, num_classes = tf.shape(probs)[0], tf.shape(probs)[1]
        roi_index = tf.repeat(tf.range(num_rois), num_classes - 1)
        class_ids = tf.tile(tf.range(1, num_classes), [num_rois])
        return (roi_index, class_ids, tf.reshape(probs[:, 1:], [-1]),
                tf.reshape(deltas[:, 1:], [-1, 4]))
    roi_index = tf.range(tf.shape(probs)[0])
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
    index = tf.stack([roi_index, class_ids], axis=1)
    return roi_index, class_ids, tf.gather_nd(probs, index), tf.gather_nd(deltas, index)


def refine_detections_graph(rois, probs, deltas, window, config):
    """Final detections of one image: rois [R, 4], probs [R, NC], deltas [R, NC, 4],
    window [4] (normalized). Returns [DETECTION_MAX_INSTANCES, 6], best score first.
    DETECTION_PER_CLASS chooses the candidates (detection_candidates)."""
    roi_index, class_ids, scores, class_deltas = detection_candidates(
        probs, deltas, config.DETECTION_PER_CLASS)
    class_deltas = class_deltas * tf.constant(config.BBOX_STD_DEV, tf.float32)
    boxes = clip_boxes_graph(apply_box_deltas_graph(tf.gather(rois, roi_index), class_deltas),
                             window)
    keep = class_ids > 0
    if config.DETECTION_MIN_CONFIDENCE:
        keep &= scores >= config.DETECTION_MIN_CONFIDENCE
    boxes, scores = tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep)
    class_ids = tf.boolean_mask(class_ids, keep)
    # Per-class NMS in one call: shifting each class to its own region of the plane
    # (coordinates are in [0, 1]) keeps boxes of different classes from suppressing each other.
    shifted = boxes + 2. * tf.cast(class_ids, tf.float32)[:, None]
    kept = tf.image.non_max_suppression(shifted, scores, config.DETECTION_MAX_INSTANCES,
                                        config.DETECTION_NMS_THRESHOLD)
    rows = tf.concat([tf.gather(boxes, kept),
                      tf.cast(tf.gather(class_ids, kept), tf.float32)[:, None],
                      tf.gather(scores, kept)[:, None]], axis=1)
    return pad_rows(rows, config.DETECTION_MAX_INSTANCES)


class DetectionLayer(Float32Layer):
    """Turn classifier outputs on the proposals into final detections (module docstring)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config

    def call(self, inputs):
        rois, probs, deltas, image_meta = inputs
        meta = parse_image_meta_graph(image_meta)
        shape = meta["image_shape"][:, :2]
        scale = tf.concat([shape, shape], axis=1) - 1.
        window = (meta["window"] - tf.constant([0., 0., 1., 1.])) / scale
        spec = tf.TensorSpec([self.config.DETECTION_MAX_INSTANCES, 6], tf.float32)
        return tf.map_fn(lambda a: refine_detections_graph(*a, config=self.config),
                         (rois, probs, deltas, window), fn_output_signature=spec)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.config.DETECTION_MAX_INSTANCES, 6)

