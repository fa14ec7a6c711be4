"""Graph stages on hand-made inputs with known answers: proposals, ROIAlign levels,
detection targets, detections and the five losses."""
import math

import numpy as np
import pytest
import tensorflow as tf

from mrcnn.config import Config
from mrcnn import losses
from mrcnn.heads import WholeInputConv2D
from mrcnn.roi import (DetectionLayer, DetectionTargetLayer, LeadingRows, PadRowsTo,
                       PyramidROIAlign)
from mrcnn.rpn import ProposalLayer


class HandConfig(Config):
    NAME = "hand"
    NUM_CLASSES = 3
    IMAGES_PER_GPU = 1
    IMAGE_MAX_DIM = 128
    PRE_NMS_LIMIT = 10
    TRAIN_ROIS_PER_IMAGE = 9          # -> int(9 * 0.33) = 2 positive slots
    MINI_MASK_SHAPE = (28, 28)
    DETECTION_MAX_INSTANCES = 5
    DETECTION_MIN_CONFIDENCE = 0.5
    DETECTION_NMS_THRESHOLD = 0.3


def f32(x):
    return tf.constant(np.asarray(x, np.float32))


def test_proposal_layer_scores_refines_suppresses_and_pads():
    config = HandConfig()
    anchors = [[0.1, 0.1, 0.3, 0.3], [0.1, 0.11, 0.3, 0.31], [0.5, 0.5, 0.7, 0.7],
               [0.6, 0.0, 0.9, 0.2]]
    scores = [0.9, 0.8, 0.7, 0.1]
    probs = np.stack([1 - np.array(scores), scores], -1)[None]
    deltas = np.zeros((1, 4, 4), np.float32)
    deltas[0, 3] = [1.0, 0, 0, 0]     # moves anchor 3 down by 1 std-dev unit * 0.1 * height
    out = ProposalLayer(4, 0.7, config=config)([f32(probs), f32(deltas), f32([anchors])]).numpy()
    assert out.shape == (1, 4, 4)
    np.testing.assert_allclose(out[0, 0], anchors[0], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], anchors[2], atol=1e-6)   # anchor 1 suppressed
    np.testing.assert_allclose(out[0, 2], [0.63, 0.0, 0.93, 0.2], atol=1e-6)
    np.testing.assert_array_equal(out[0, 3], 0)                    # padding


def test_proposal_layer_clips_to_image():
    config = HandConfig()
    out = ProposalLayer(1, 0.7, config=config)(
        [f32([[[0., 1.]]]), f32([[[0, 0, 50., 50.]]]), f32([[[0.4, 0.4, 0.6, 0.6]]])]).numpy()
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[0, 0], [0, 0, 1, 1], atol=1e-6)


@pytest.mark.parametrize("side,level", [(0.05, 2), (0.11, 3), (0.21875, 4), (0.4375, 5),
                                        (0.9, 5)])
def test_roi_align_picks_the_pyramid_level_by_box_size(side, level):
    # image 1024x1024: level = 4 + round(log2(side * 1024 / 224)), clipped to 2..5.
    meta = np.zeros((1, 16), np.float32)
    meta[0, 4:7] = [1024, 1024, 3]
    maps = [tf.fill([1, 1024 // s, 1024 // s, 2], float(lvl))
            for s, lvl in zip([4, 8, 16, 32], [2, 3, 4, 5])]
    box = [[[0.05, 0.05, 0.05 + side, 0.05 + side]]]
    out = PyramidROIAlign([3, 3])([f32(box), f32(meta)] + maps).numpy()
    assert out.shape == (1, 1, 3, 3, 2)
    np.testing.assert_allclose(out, level)


@pytest.mark.parametrize("canonical,side,level", [(224, 0.125, 3), (112, 0.125, 4),
                                                  (150, 0.11, 4), (150, 0.2, 4), (150, 0.21, 5)])
def test_roi_align_canonical_size_moves_the_level_boundaries(canonical, side, level):
    # image 1024x1024: level = 4 + round(log2(side * 1024 / canonical)); at 150 px, boxes of
    # 106-212 px are pooled from P4.
    meta = np.zeros((1, 16), np.float32)
    meta[0, 4:7] = [1024, 1024, 3]
    maps = [tf.fill([1, 1024 // s, 1024 // s, 1], float(lvl))
            for s, lvl in zip([4, 8, 16, 32], [2, 3, 4, 5])]
    box = [[[0.05, 0.05, 0.05 + side, 0.05 + side]]]
    out = PyramidROIAlign([2, 2], canonical_size=canonical)([f32(box), f32(meta)] + maps)
    np.testing.assert_allclose(out.numpy(), level)


def test_roi_align_keeps_box_order_and_samples_bilinearly():
    meta = np.zeros((1, 16), np.float32)
    meta[0, 4:7] = [64, 64, 3]
    ramp = np.tile(np.arange(16, dtype=np.float32)[None, :, None], (16, 1, 1))[None]  # x value
    maps = [f32(ramp), tf.zeros([1, 8, 8, 1]), tf.zeros([1, 4, 4, 1]), tf.zeros([1, 2, 2, 1])]
    boxes = [[[0, 0, 0.2, 0.2], [0, 0.6, 0.2, 0.8]]]   # small -> P2 (the ramp)
    out = PyramidROIAlign([2, 2])([f32(boxes), f32(meta)] + maps).numpy()
    # crop_and_resize samples x at x1*(W-1) and x2*(W-1): 0 and 3; 9 and 12.
    np.testing.assert_allclose(out[0, 0, 0, :, 0], [0, 3], atol=1e-5)
    np.testing.assert_allclose(out[0, 1, 0, :, 0], [9, 12], atol=1e-5)


@pytest.mark.parametrize("kernel_size", [7, 1])
def test_whole_input_conv_is_the_valid_conv_as_one_matmul(kernel_size):
    """Classifier "FC" layers: same weights, outputs and gradients as Keras' Conv2D."""
    import keras
    x = tf.constant(np.random.default_rng(0).normal(size=(5, kernel_size, kernel_size, 6)),
                    tf.float32)
    conv, matmul = keras.layers.Conv2D(4, kernel_size), WholeInputConv2D(4, kernel_size)
    conv.build(x.shape)
    matmul.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=w.shape).astype(np.float32) for w in conv.get_weights()]
    conv.set_weights(weights)
    matmul.set_weights(weights)
    assert [w.shape for w in matmul.weights] == [(kernel_size, kernel_size, 6, 4), (4,)]
    grads = []
    for layer in (conv, matmul):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.range(1., 5.))
        grads.append((y, *tape.gradient(loss, [x] + layer.trainable_variables)))
    assert grads[1][0].shape == (5, 1, 1, 4)
    for ours, keras_conv in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours, keras_conv, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must span the whole input"):
        WholeInputConv2D(4, kernel_size)(tf.zeros((1, kernel_size + 1, kernel_size + 1, 6)))


def test_leading_rows_cut_to_the_longest_valid_prefix_and_pad_back():
    valid = tf.constant([[3, 1, 0, 0, 0], [2, 0, 0, 0, 0]])
    rows = tf.reshape(tf.range(2 * 5 * 2, dtype=tf.float32), [2, 5, 2])
    (cut,) = LeadingRows()([valid, rows])
    np.testing.assert_array_equal(cut.numpy(), rows.numpy()[:, :2])
    padded = PadRowsTo(5)([cut, valid]).numpy()
    np.testing.assert_array_equal(padded[0, :2], rows.numpy()[0, :2])
    # The second image has one valid row: its second kept row is zeroed like the padding.
    np.testing.assert_array_equal(padded[1, :1], rows.numpy()[1, :1])
    assert padded.shape == (2, 5, 2) and not padded[0, 2:].any() and not padded[1, 1:].any()
    (none_valid,) = LeadingRows()([tf.zeros([2, 5]), rows])
    assert none_valid.shape == (2, 1, 2)
    assert not PadRowsTo(5)([none_valid, tf.zeros([2, 5])]).numpy().any()


def test_detection_targets_sample_positives_first_with_deltas_and_masks():
    config = HandConfig()
    gt_box = [0.1, 0.1, 0.5, 0.5]
    proposals = np.zeros((1, 6, 4), np.float32)
    proposals[0, 0] = gt_box                        # IoU 1
    proposals[0, 1] = [0.1, 0.15, 0.5, 0.55]        # IoU 0.78, shifted right
    proposals[0, 2] = [0.7, 0.7, 0.9, 0.9]          # IoU 0 -> negative
    gt_ids = np.array([[2, 0]], np.int32)
    gt_boxes = np.array([[gt_box, [0, 0, 0, 0]]], np.float32)
    gt_masks = np.zeros((1, 28, 28, 2), bool)
    gt_masks[0, :, :, 0] = True
    rois, ids, deltas, masks = [t.numpy() for t in DetectionTargetLayer(config)(
        [f32(proposals), tf.constant(gt_ids), f32(gt_boxes), tf.constant(gt_masks)])]
    assert rois.shape == (1, 9, 4) and ids.shape == (1, 9) and masks.shape == (1, 2, 28, 28)
    assert ids.dtype == np.int32
    assert list(ids[0]) == [2, 2, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(rois[0, 2], [0.7, 0.7, 0.9, 0.9])
    np.testing.assert_array_equal(rois[0, 3:], 0)
    exact = int(np.argmin(np.abs(rois[0, :2, 1] - 0.1)))
    shifted = 1 - exact
    np.testing.assert_allclose(deltas[0, exact], 0, atol=1e-6)
    # shifted box: dx = -0.05 / 0.4 / 0.1 (BBOX_STD_DEV)
    np.testing.assert_allclose(deltas[0, shifted], [0, -1.25, 0, 0], atol=1e-5)
    assert masks[0, exact].min() == 1
    # The shifted ROI sticks out of the GT box on its right: those mask columns are 0.
    assert masks[0, shifted, :, -1].max() == 0 and masks[0, shifted, :, 0].min() == 1
    np.testing.assert_array_equal(deltas[0, 2:], 0)


def test_detection_targets_without_positives_sample_negatives():
    config = HandConfig()
    proposals = np.zeros((1, 6, 4), np.float32)
    proposals[0, :3] = [[0.7, 0.7, 0.9, 0.9], [0.6, 0.6, 0.8, 0.8], [0, 0, 0.05, 0.05]]
    gt_boxes = np.array([[[0.1, 0.1, 0.4, 0.4]]], np.float32)
    rois, ids, _, _ = [t.numpy() for t in DetectionTargetLayer(config)(
        [f32(proposals), tf.constant([[1]], tf.int32), f32(gt_boxes),
         tf.ones([1, 28, 28, 1], tf.bool)])]
    assert (ids == 0).all()
    assert np.count_nonzero(rois.sum(-1)) == 3


def test_detection_layer_filters_scores_background_and_nms_per_class():
    config = HandConfig()
    r = [0.1, 0.1, 0.4, 0.4]
    rois = np.array([[r, [0.1, 0.12, 0.4, 0.42], r, [0.6, 0.6, 0.9, 0.9], [0.6, 0.1, 0.9, 0.3]]],
                    np.float32)
    probs = np.zeros((1, 5, 3), np.float32)
    probs[0, 0] = [0.1, 0.9, 0.0]      # class 1, 0.9
    probs[0, 1] = [0.2, 0.8, 0.0]      # class 1, 0.8: suppressed by roi 0
    probs[0, 2] = [0.3, 0.0, 0.7]      # class 2, 0.7: same box, other class: kept
    probs[0, 3] = [0.95, 0.05, 0.0]    # background: dropped
    probs[0, 4] = [0.3, 0.3, 0.4]      # class 2 at 0.4 < DETECTION_MIN_CONFIDENCE: dropped
    meta = np.zeros((1, config.IMAGE_META_SIZE), np.float32)
    meta[0, 4:7] = [128, 128, 3]
    meta[0, 7:11] = [0, 0, 128, 128]
    out = DetectionLayer(config)([f32(rois), f32(probs), tf.zeros([1, 5, 3, 4]), f32(meta)]).numpy()
    assert out.shape == (1, 5, 6)
    np.testing.assert_allclose(out[0, 0], r + [1, 0.9], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], r + [2, 0.7], atol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], 0)


def test_detection_layer_per_class_names_a_roi_once_per_class_with_that_class_box():
    class PerClass(HandConfig):
        DETECTION_PER_CLASS = True
        DETECTION_MIN_CONFIDENCE = 0.2
    r = [0.1, 0.1, 0.4, 0.4]
    rois = np.array([[r, [0.6, 0.6, 0.9, 0.9]]], np.float32)
    probs = np.zeros((1, 2, 3), np.float32)
    probs[0, 0] = [0.1, 0.6, 0.3]      # class 1 at 0.6 and, second, class 2 at 0.3: both
    probs[0, 1] = [0.7, 0.25, 0.05]    # background first: class 1 at 0.25 still a candidate
    deltas = np.zeros((1, 2, 3, 4), np.float32)
    deltas[0, 0, 2] = [1, 0, 0, 0]     # class 2's box of roi 0 moves down 0.1 * 0.3 * 1
    meta = np.zeros((1, PerClass().IMAGE_META_SIZE), np.float32)
    meta[0, 4:7] = [128, 128, 3]
    meta[0, 7:11] = [0, 0, 128, 128]
    inputs = [f32(rois), f32(probs), f32(deltas), f32(meta)]
    out = DetectionLayer(PerClass())(inputs).numpy()[0]
    np.testing.assert_allclose(out[0], r + [1, 0.6], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.13, 0.1, 0.43, 0.4, 2, 0.3], atol=1e-6)
    np.testing.assert_allclose(out[2], [0.6, 0.6, 0.9, 0.9, 1, 0.25], atol=1e-6)
    np.testing.assert_array_equal(out[3:], 0)
    # One per ROI, of its top class (Matterport): roi 1 is background, roi 0 only class 1.
    top = DetectionLayer(type("Top", (PerClass,), {"DETECTION_PER_CLASS": False})())(inputs)
    np.testing.assert_allclose(top.numpy()[0, :2], [r + [1, 0.6], [0] * 6], atol=1e-6)


def test_detection_layer_clips_boxes_to_the_window():
    config = HandConfig()
    meta = np.zeros((1, config.IMAGE_META_SIZE), np.float32)
    meta[0, 4:7] = [128, 128, 3]
    meta[0, 7:11] = [32, 0, 96, 128]       # letterboxed image: rows 32..95
    probs = f32([[[0., 1., 0.]]])
    out = DetectionLayer(config)([f32([[[0.0, 0.1, 0.5, 0.4]]]), probs, tf.zeros([1, 1, 3, 4]),
                                  f32(meta)]).numpy()
    np.testing.assert_allclose(out[0, 0, :4], [32 / 127, 0.1, 0.5, 0.4], atol=1e-6)


# ---------------------------------------------------------------------------- losses
def test_smooth_l1():
    out = losses.smooth_l1_loss(f32([0, 0, 0]), f32([0.5, 2, -3])).numpy()
    np.testing.assert_allclose(out, [0.125, 1.5, 2.5])


def test_rpn_class_loss_ignores_neutral_anchors():
    match = tf.constant([[[1], [-1], [0]]], tf.int32)
    logits = f32([[[0, 2], [0, 0], [50, -50]]])
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert losses.rpn_class_loss_graph(match, logits).numpy() == pytest.approx(expected, rel=1e-5)
    assert losses.rpn_class_loss_graph(tf.zeros([1, 3, 1], tf.int32), logits).numpy() == 0


def test_rpn_bbox_loss_uses_each_images_leading_target_rows():
    config = HandConfig()
    match = tf.constant([[[1], [0], [1]], [[0], [1], [-1]]], tf.int32)
    pred = f32([[[1, 0, 0, 0], [9, 9, 9, 9], [0, 0, 0, 3]], [[9, 9, 9, 9], [0, 0.5, 0, 0], [9] * 4]])
    target = np.zeros((2, 4, 4), np.float32)
    target[1, 0] = [0, 0, 0, 0]
    target[1, 1:] = 7                      # padding rows beyond the count must be ignored
    # per element: image 0 -> [0.5,0,0,0] and [0,0,0,2.5]; image 1 -> [0,0.125,0,0]
    expected = (0.5 + 2.5 + 0.125) / 12
    out = losses.rpn_bbox_loss_graph(config, f32(target), match, pred).numpy()
    assert out == pytest.approx(expected, rel=1e-5)


def test_mrcnn_class_loss_drops_predictions_of_inactive_classes():
    target = tf.constant([[1, 2]], tf.int32)
    logits = f32([[[0, 1, 0], [0, 0, 3]]])            # second ROI predicts class 2
    active = f32([[1, 1, 0]])                         # class 2 not in this source
    p = np.exp([0, 1, 0]) / np.exp([0, 1, 0]).sum()
    assert losses.mrcnn_class_loss_graph(target, logits, active).numpy() == pytest.approx(
        -math.log(p[1]), rel=1e-5)


def test_mrcnn_class_loss_label_smoothing_mixes_in_the_uniform_target():
    target = tf.constant([[1, 0]], tf.int32)
    logits = f32([[[0, 2, 1], [1, 0, 0]]])
    active = f32([[1, 1, 1]])
    log_p = logits.numpy()[0] - np.log(np.exp(logits.numpy()[0]).sum(-1, keepdims=True))
    e = 0.3
    labels = np.eye(3)[[1, 0]] * (1 - e) + e / 3
    expected = -(labels * log_p).sum(-1).mean()
    assert losses.mrcnn_class_loss_graph(target, logits, active, e).numpy() == pytest.approx(
        expected, rel=1e-5)
    plain = -log_p[[0, 1], [1, 0]].mean()
    assert losses.mrcnn_class_loss_graph(target, logits, active).numpy() == pytest.approx(
        plain, rel=1e-5)
    assert expected > plain                  # confident right answers cost more when smoothed


def test_mrcnn_class_loss_focal_gamma_weighs_each_roi_by_its_doubt():
    target = tf.constant([[1, 0, 2]], tf.int32)
    logits = f32([[[0, 4, 0], [1, 0, 0], [2, 0, -1]]])  # sure and right, unsure, sure and wrong
    active = f32([[1, 1, 1]])
    p = np.exp(logits.numpy()[0]) / np.exp(logits.numpy()[0]).sum(-1, keepdims=True)
    p_target = p[[0, 1, 2], [1, 0, 2]]
    g = 2.0
    expected = (-np.log(p_target) * (1 - p_target) ** g).mean()
    assert losses.mrcnn_class_loss_graph(target, logits, active, 0.0, g).numpy() == pytest.approx(
        expected, rel=1e-5)
    plain = losses.mrcnn_class_loss_graph(target, logits, active).numpy()
    assert expected < plain
    sure_right = (target[:, :1], logits[:, :1], active)        # hardly counts any more
    assert losses.mrcnn_class_loss_graph(*sure_right, 0.0, g).numpy() < \
        0.01 * losses.mrcnn_class_loss_graph(*sure_right).numpy()
    sure = f32([[[0, 40, 0]]])                   # p = 1 in float32: finite loss and gradient
    with tf.GradientTape() as tape:
        tape.watch(sure)
        value = losses.mrcnn_class_loss_graph(tf.constant([[1]]), sure, active, 0.0, 0.5)
    assert np.isfinite(value.numpy()) and np.isfinite(tape.gradient(value, sure).numpy()).all()


def test_mrcnn_bbox_loss_picks_the_target_class_deltas_of_positive_rois():
    target_bbox = f32([[[0, 0, 0, 0], [5, 5, 5, 5]]])
    ids = tf.constant([[2, 0]], tf.int32)
    pred = np.zeros((1, 2, 3, 4), np.float32)
    pred[0, 0, 2] = [0.5, 0, 0, 2]
    pred[0, 0, 1] = [9, 9, 9, 9]
    assert losses.mrcnn_bbox_loss_graph(target_bbox, ids, f32(pred)).numpy() == pytest.approx(
        (0.125 + 1.5) / 4)
    assert losses.mrcnn_bbox_loss_graph(target_bbox, tf.zeros([1, 2], tf.int32), f32(pred)) == 0


def test_mrcnn_mask_loss_is_bce_of_the_target_class_channel():
    target = np.zeros((1, 2, 4, 4), np.float32)
    target[0, 0, :2] = 1
    pred = np.full((1, 2, 4, 4, 3), 0.5, np.float32)
    pred[0, 0, :, :, 2] = 0.99                          # wrong channel, must be ignored
    ids = tf.constant([[1, 0]], tf.int32)
    assert losses.mrcnn_mask_loss_graph(f32(target), ids, f32(pred)).numpy() == pytest.approx(
        math.log(2), rel=1e-5)
    pred[0, 0, :, :, 1] = np.where(target[0, 0] > 0, 0.9, 0.2)
    expected = -(8 * math.log(0.9) + 8 * math.log(0.8)) / 16
    assert losses.mrcnn_mask_loss_graph(f32(target), ids, f32(pred)).numpy() == pytest.approx(
        expected, rel=1e-5)


@pytest.mark.parametrize("mode", ["matterport", "sgd"])
def test_l2_penalty_value_and_gradient_follow_its_mode(mode):
    """matterport: wd * sum(w^2) / size(w), gradient 2 wd w / size(w); sgd: (wd / 2) sum(w^2),
    gradient wd w (torchvision's weight decay)."""
    values = [np.arange(6, dtype=np.float32).reshape(2, 3) - 2, np.array([0.5, -3.], np.float32)]
    weights = [tf.Variable(v) for v in values]
    with tf.GradientTape() as tape:
        term = losses.l2_penalty(0.1, mode)(weights)
    grads = tape.gradient(term, weights)
    if mode == "matterport":
        expected = sum(0.1 * np.sum(v ** 2) / v.size for v in values)
        expected_grads = [2 * 0.1 * v / v.size for v in values]
    else:
        expected = sum(0.05 * np.sum(v ** 2) for v in values)
        expected_grads = [0.1 * v for v in values]
    assert float(term) == pytest.approx(expected, rel=1e-6)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-6)


def test_batch_pack_graph_takes_the_first_counts_of_each_row():
    from mrcnn.model import batch_pack_graph
    x = f32(np.arange(2 * 3 * 2).reshape(2, 3, 2))
    packed = batch_pack_graph(x, tf.constant([2, 1]), 2).numpy()
    np.testing.assert_array_equal(packed, [[0, 1], [2, 3], [6, 7]])
