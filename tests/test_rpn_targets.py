"""Tests of mrcnn.rpn_targets.build_rpn_targets with hand-computed IoUs."""

import math

import numpy as np
import pytest

from mrcnn import utils
from mrcnn.rpn_targets import build_rpn_targets

STD = np.array([0.1, 0.1, 0.2, 0.2])


class Cfg:
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    RPN_BBOX_STD_DEV = STD


IMAGE_SHAPE = (128, 128, 3)
GT = np.array([[0, 0, 10, 10]])


def far_anchors(n, start=100):
    """n anchors with IoU 0 against everything near the origin."""
    y = start + 20 * np.arange(n)
    return np.stack([y, np.full(n, 200), y + 10, np.full(n, 210)], axis=1)


def test_thresholds_negative_positive_neutral():
    # Anchors inside the 10x10 GT: IoU = anchor area / 100.
    anchors = np.array([
        [0, 0, 10, 10],   # 1.0  -> positive (also the GT's best)
        [0, 0, 10, 8],    # 0.8  -> positive
        [0, 0, 10, 7],    # 0.7  -> positive (>= 0.7)
        [0, 0, 10, 5],    # 0.5  -> neutral
        [0, 0, 10, 3],    # 0.3  -> neutral (negatives need < 0.3)
        [0, 0, 10, 2],    # 0.2  -> negative
        [50, 50, 60, 60],  # 0   -> negative
    ])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([1]), GT, Cfg, rng=0)
    assert match.dtype == np.int32 and match.shape == (7,)
    assert bbox.dtype == np.float32 and bbox.shape == (256, 4)
    np.testing.assert_array_equal(match, [1, 1, 1, 0, 0, -1, -1])


def test_best_anchor_of_each_gt_is_positive_with_ties():
    gt = np.array([[0, 0, 10, 10],       # best anchors: 0 and 1, both IoU 0.4 (tie)
                   [100, 100, 110, 110]])  # best anchor: 3 with IoU 0.1 only
    anchors = np.array([
        [0, 0, 10, 4],       # 0.4 with GT0
        [0, 6, 10, 10],      # 0.4 with GT0
        [0, 0, 10, 2],       # 0.2 -> negative
        [100, 100, 110, 101],  # 0.1 with GT1, its best -> positive
        [100, 109, 110, 109],  # empty anchor -> 0 -> negative
        [300, 300, 310, 310],  # 0 -> negative
    ])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([1, 2]), gt, Cfg, rng=0)
    np.testing.assert_array_equal(match, [1, 1, -1, 1, -1, -1])
    # Deltas, in anchor order, to each anchor's max-IoU GT, divided by the std dev.
    expected = np.array([
        [0, (5 - 2) / 4, 0, math.log(10 / 4)],
        [0, (5 - 8) / 4, 0, math.log(10 / 4)],
        [0, (105 - 100.5) / 1, 0, math.log(10 / 1)],
    ]) / STD
    np.testing.assert_allclose(bbox[:3], expected, rtol=1e-6)
    assert not bbox[3:].any()


def test_gt_without_any_overlap_makes_no_anchor_positive():
    # GT far outside all anchors: its best IoU is 0; it must not turn every anchor positive.
    match, bbox = build_rpn_targets(IMAGE_SHAPE, far_anchors(5), np.array([1]),
                                    np.array([[0, 0, 10, 10]]), Cfg, rng=0)
    np.testing.assert_array_equal(match, [-1] * 5)
    assert not bbox.any()


def test_bbox_deltas_hand_computed():
    anchors = np.array([[0, 0, 10, 10], [40, 40, 50, 50]])
    gt = np.array([[1, 2, 11, 14]])  # IoU with anchor 0 = 72 / 148 (its best anchor)
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([3], np.uint8), gt, Cfg, rng=0)
    np.testing.assert_array_equal(match, [1, -1])
    # anchor: centre (5, 5), 10x10; gt: centre (6, 8), 10x12.
    np.testing.assert_allclose(bbox[0], [1.0, 3.0, 0.0, math.log(1.2) / 0.2], rtol=1e-6)
    assert not bbox[1:].any()


def test_caps_128_positives_and_256_total():
    anchors = np.concatenate([np.tile(GT, (300, 1)), far_anchors(500)])  # 300 positives, 500 negatives
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([1]), GT, Cfg, rng=1)
    assert np.count_nonzero(match == 1) == 128
    assert np.count_nonzero(match == -1) == 128
    assert np.all(match[:300] >= 0) and np.all(match[300:] <= 0)
    # All positives are identical to the GT: zero deltas, and rows after 128 are zero.
    assert not bbox.any()


def test_negatives_fill_up_to_256():
    anchors = np.concatenate([np.tile(GT, (10, 1)), far_anchors(500)])
    match, _ = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([1]), GT, Cfg, rng=2)
    assert np.count_nonzero(match == 1) == 10
    assert np.count_nonzero(match == -1) == 246


def test_sampling_is_reproducible_with_rng():
    anchors = np.concatenate([np.tile(GT, (300, 1)), far_anchors(500)])
    a = build_rpn_targets(IMAGE_SHAPE, anchors, [1], GT, Cfg, rng=np.random.default_rng(7))
    b = build_rpn_targets(IMAGE_SHAPE, anchors, [1], GT, Cfg, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])


def test_positive_rows_follow_anchor_order():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [0, 1, 10, 10]])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, [1], GT, Cfg, rng=0)
    np.testing.assert_array_equal(match, [1, 1, -1, 1])
    expected = np.array([[0, 0, 0, 0],
                         [0, 0.5 / 9, 0, math.log(10 / 9)],
                         [0, -0.5 / 9, 0, math.log(10 / 9)]]) / STD
    np.testing.assert_allclose(bbox[:3], expected, rtol=1e-5, atol=1e-6)


def test_crowd_boxes():
    gt = np.array([[0, 0, 10, 10], [100, 100, 200, 200]])
    ids = np.array([1, -1])  # second box is a crowd
    anchors = np.array([
        [0, 0, 10, 10],        # positive (GT0)
        [100, 100, 200, 200],  # identical to the crowd: not positive, not negative
        [190, 190, 200, 200],  # crowd IoU 100/10000 = 0.01 -> neutral
        [199, 199, 209, 209],  # crowd IoU 1/10099 < 0.001 -> negative
        [300, 300, 310, 310],  # negative
    ])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, ids, gt, Cfg, rng=0)
    np.testing.assert_array_equal(match, [1, 0, 0, -1, -1])
    assert not bbox.any()  # the only positive equals its GT


def test_only_crowds_and_no_gt():
    anchors = np.array([[100, 100, 200, 200], [0, 0, 10, 10], [20, 20, 30, 30]])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.array([-1]), np.array([[100, 100, 200, 200]]), Cfg)
    np.testing.assert_array_equal(match, [0, -1, -1])
    assert not bbox.any()
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, np.zeros([0], np.int32), np.zeros((0, 4)), Cfg)
    np.testing.assert_array_equal(match, [-1, -1, -1])
    assert bbox.shape == (256, 4) and not bbox.any()


def test_no_gt_samples_256_negatives_and_mismatch_raises():
    match, _ = build_rpn_targets(IMAGE_SHAPE, far_anchors(400), np.zeros([0], np.int64),
                                 np.zeros((0, 4), np.int32), Cfg, rng=3)
    assert np.count_nonzero(match == -1) == 256 and np.count_nonzero(match == 1) == 0
    with pytest.raises(ValueError):
        build_rpn_targets(IMAGE_SHAPE, far_anchors(4), np.array([1, 2]), GT, Cfg)


def test_small_train_anchor_count_config():
    class Small(Cfg):
        RPN_TRAIN_ANCHORS_PER_IMAGE = 5
    anchors = np.concatenate([np.tile(GT, (4, 1)), far_anchors(10)])
    match, bbox = build_rpn_targets(IMAGE_SHAPE, anchors, [1], GT, Small, rng=0)
    assert bbox.shape == (5, 4)
    assert np.count_nonzero(match == 1) == 2 and np.count_nonzero(match == -1) == 3


def test_full_coco_pyramid_sanity():
    shapes = [[int(math.ceil(1024 / s))] * 2 for s in [4, 8, 16, 32, 64]]
    anchors = utils.generate_pyramid_anchors((32, 64, 128, 256, 512), [0.5, 1, 2], shapes,
                                             [4, 8, 16, 32, 64], 1)
    gt = np.array([[100, 100, 228, 228], [500, 600, 532, 632]])
    match, bbox = build_rpn_targets((1024, 1024, 3), anchors, np.array([1, 2]), gt, Cfg, rng=0)
    assert match.shape == (261888,)
    n_pos = np.count_nonzero(match == 1)
    assert 2 <= n_pos <= 128
    assert np.count_nonzero(match == -1) == 256 - n_pos
    # The anchor identical to GT1 (scale 32, ratio 1, centre (516, 616) on P2) is positive.
    exact = np.flatnonzero(np.all(anchors == [500, 600, 532, 632], axis=1))
    assert exact.size == 1 and match[exact[0]] == 1
    # Every positive's stored delta, undone, lands on one of the GT boxes.
    pos = np.flatnonzero(match == 1)
    boxes = utils.apply_box_deltas(anchors[pos], bbox[:n_pos] * STD)
    ious = utils.compute_overlaps(boxes, gt).max(axis=1)
    np.testing.assert_allclose(ious, 1.0, atol=1e-4)
