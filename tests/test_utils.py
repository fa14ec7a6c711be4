"""Tests of mrcnn.utils against hand-computed values."""

import logging
import math
import urllib.error

import numpy as np
import pytest
from PIL import Image

from mrcnn import download, np_boxes, np_images, utils

SQ2 = math.sqrt(2.0)


############################################################
#  Anchors
############################################################

COCO_SCALES = (32, 64, 128, 256, 512)
COCO_RATIOS = [0.5, 1, 2]
COCO_STRIDES = [4, 8, 16, 32, 64]


def coco_anchors(size=1024):
    shapes = [[int(math.ceil(size / s))] * 2 for s in COCO_STRIDES]
    return utils.generate_pyramid_anchors(COCO_SCALES, COCO_RATIOS, shapes, COCO_STRIDES, 1)


def test_pyramid_anchor_count_and_first_anchors_at_1024():
    anchors = coco_anchors(1024)
    assert anchors.shape == (261888, 4)
    assert np.issubdtype(anchors.dtype, np.floating)
    h05, w05 = 32 * SQ2, 32 / SQ2  # ratio 0.5 = width/height -> tall anchor
    expected = np.array([
        [-h05 / 2, -w05 / 2, h05 / 2, w05 / 2],          # (y=0, x=0), ratio 0.5
        [-16, -16, 16, 16],                               # (0, 0), ratio 1
        [-w05 / 2, -h05 / 2, w05 / 2, h05 / 2],           # (0, 0), ratio 2
        [-h05 / 2, 4 - w05 / 2, h05 / 2, 4 + w05 / 2],    # (0, 1): x centre 4 px
        [-16, 4 - 16, 16, 4 + 16],
    ])
    np.testing.assert_allclose(anchors[:5], expected, atol=1e-9)
    # Row-major: the second row of P2 (y centre 4) starts after 256 locations x 3 ratios.
    np.testing.assert_allclose(anchors[256 * 3 + 1], [4 - 16, -16, 4 + 16, 16])
    # P3 starts after the 256*256*3 anchors of P2, with scale 64 and stride 8.
    p3 = 256 * 256 * 3
    np.testing.assert_allclose(anchors[p3 + 1], [-32, -32, 32, 32])
    np.testing.assert_allclose(anchors[p3 + 4], [-32, 8 - 32, 32, 8 + 32])
    # Last anchor: P6, location (15, 15) -> centre (960, 960), ratio 2, scale 512.
    hh, hw = 512 / SQ2 / 2, 512 * SQ2 / 2
    np.testing.assert_allclose(anchors[-1], [960 - hh, 960 - hw, 960 + hh, 960 + hw])


def test_generate_anchors_order_and_shapes():
    a = utils.generate_anchors(16, [0.5, 1, 2], (2, 3), 8, 1)
    assert a.shape == (2 * 3 * 3, 4)
    heights = a[:, 2] - a[:, 0]
    widths = a[:, 3] - a[:, 1]
    np.testing.assert_allclose(widths / heights, np.tile([0.5, 1, 2], 6))
    np.testing.assert_allclose(np.sqrt(heights * widths), 16)  # area = scale^2
    cy = (a[:, 0] + a[:, 2]) / 2
    cx = (a[:, 1] + a[:, 3]) / 2
    np.testing.assert_allclose(cy, np.repeat([0, 0, 0, 8, 8, 8], 3))
    np.testing.assert_allclose(cx, np.repeat([0, 8, 16, 0, 8, 16], 3))


def test_generate_anchors_anchor_stride_and_multiple_scales():
    a = utils.generate_anchors(8, [1], (4, 4), 4, 2)
    cy = (a[:, 0] + a[:, 2]) / 2
    cx = (a[:, 1] + a[:, 3]) / 2
    np.testing.assert_allclose(cy, [0, 0, 8, 8])
    np.testing.assert_allclose(cx, [0, 8, 0, 8])
    # Several scales per location: ratio major, scale minor.
    b = utils.generate_anchors([8, 16], [1, 4], (1, 1), 4, 1)
    np.testing.assert_allclose(b, [[-4, -4, 4, 4], [-8, -8, 8, 8],
                                   [-2, -8, 2, 8], [-4, -16, 4, 16]])


############################################################
#  Boxes
############################################################

def test_extract_bboxes_exclusive_convention_and_empty():
    mask = np.zeros((10, 12, 3), dtype=np.uint8)
    mask[2:5, 3:8, 0] = 255
    mask[4, 5, 0] = 0  # hole does not change the box
    mask[9, 11, 1] = 1
    boxes = utils.extract_bboxes(mask)
    assert boxes.dtype == np.int32
    np.testing.assert_array_equal(boxes, [[2, 3, 5, 8], [9, 11, 10, 12], [0, 0, 0, 0]])
    np.testing.assert_array_equal(utils.extract_bboxes(mask.astype(bool)), boxes)
    np.testing.assert_array_equal(utils.extract_bboxes(mask.astype(np.int64)), boxes)
    empty = utils.extract_bboxes(np.zeros((10, 12, 0), bool))
    assert empty.shape == (0, 4) and empty.dtype == np.int32


def test_compute_iou_and_overlaps_hand_values():
    box = np.array([0, 0, 10, 10])
    boxes = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 10]])
    expected = [25 / 175, 1.0, 0.0, 0.5]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(utils.compute_iou(box, boxes, 100, area), expected)
    ov = utils.compute_overlaps(box[None], boxes)
    assert ov.shape == (1, 4) and ov.dtype == np.float64
    np.testing.assert_allclose(ov[0], expected)
    np.testing.assert_allclose(utils.compute_overlaps(boxes, box[None])[:, 0], expected)
    assert utils.compute_overlaps(np.zeros((0, 4)), boxes).shape == (0, 4)
    assert utils.compute_overlaps(boxes, np.zeros((0, 4))).shape == (4, 0)


def test_compute_overlaps_chunked_equals_bruteforce(monkeypatch):
    rng = np.random.default_rng(1)
    yx = rng.uniform(0, 50, (40, 2))
    b1 = np.concatenate([yx, yx + rng.uniform(1, 20, (40, 2))], axis=1)
    yx = rng.uniform(0, 50, (7, 2))
    b2 = np.concatenate([yx, yx + rng.uniform(1, 20, (7, 2))], axis=1)
    brute = np.array([[utils.compute_iou(a, b[None], (a[2] - a[0]) * (a[3] - a[1]),
                                         [(b[2] - b[0]) * (b[3] - b[1])])[0] for b in b2] for a in b1])
    monkeypatch.setattr(np_boxes, "_OVERLAP_CHUNK_ELEMENTS", 50)  # 1 column per block
    np.testing.assert_allclose(utils.compute_overlaps(b1, b2), brute, rtol=1e-12)


def test_compute_overlaps_masks():
    m1 = np.zeros((4, 4, 2), np.uint8)
    m1[:2, :, 0] = 1        # 8 px
    m1[:, :, 1] = 255       # 16 px
    m2 = np.zeros((4, 4, 1), bool)
    m2[:, :2, 0] = True     # 8 px, 4 shared with m1[...,0]
    ov = utils.compute_overlaps_masks(m1, m2)
    np.testing.assert_allclose(ov, [[4 / 12], [8 / 16]])
    assert utils.compute_overlaps_masks(m1, np.zeros((4, 4, 0))).shape == (2, 0)


def test_non_max_suppression_hand_case():
    boxes = np.array([[0, 0, 10, 10],      # A
                      [0, 1, 10, 11],      # B: IoU(A) = 90/110
                      [20, 20, 30, 30],    # C: isolated
                      [0, 5, 10, 15]])     # D: IoU(A) = 50/150, IoU(B) = 60/140
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    keep = utils.non_max_suppression(boxes, scores, 0.5)
    assert keep.dtype == np.int32
    np.testing.assert_array_equal(keep, [3, 0, 2])
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 0.3), [3, 2])
    # Removal needs IoU strictly greater than the threshold.
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 50 / 150), [3, 0, 2])
    with pytest.raises(AssertionError):
        utils.non_max_suppression(np.zeros((0, 4)), np.zeros(0), 0.5)


def test_box_refinement_and_apply_box_deltas_are_inverse():
    box = np.array([[10, 20, 30, 60]])   # h 20, w 40, centre (20, 40)
    gt = np.array([[12, 30, 52, 70]])    # h 40, w 40, centre (32, 50)
    deltas = utils.box_refinement(box, gt)
    assert deltas.dtype == np.float32
    np.testing.assert_allclose(deltas, [[12 / 20, 10 / 40, math.log(2), 0.0]], rtol=1e-6)
    np.testing.assert_allclose(utils.apply_box_deltas(box, deltas), gt, atol=1e-4)
    rng = np.random.default_rng(0)
    yx = rng.uniform(0, 100, (20, 2))
    b = np.concatenate([yx, yx + rng.uniform(1, 50, (20, 2))], axis=1)
    d = rng.normal(0, 0.3, (20, 4))
    np.testing.assert_allclose(utils.box_refinement(b, utils.apply_box_deltas(b, d)), d, atol=1e-4)


def test_norm_denorm_boxes_round_trip():
    shape = (101, 201, 3)
    boxes = np.array([[0, 0, 101, 201], [10, 20, 51, 101]])
    norm = utils.norm_boxes(boxes, shape)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm, [[0, 0, 1, 1], [0.1, 0.1, 0.5, 0.5]], atol=1e-7)
    back = utils.denorm_boxes(norm, shape)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, boxes)


def test_trim_zeros():
    x = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(utils.trim_zeros(x), [[1, 2, 3, 4], [0, 0, 5, 0]])


############################################################
#  Resizing
############################################################

def ramp_image(h, w, dtype=np.uint8):
    img = (np.arange(h * w * 3).reshape(h, w, 3) % 251).astype(dtype)
    return img


def test_resize_image_none():
    img = ramp_image(30, 50)
    out, window, scale, padding, crop = utils.resize_image(img, 64, 128, mode="none")
    assert out is img
    assert window == (0, 0, 30, 50) and scale == 1 and crop is None
    assert padding == [(0, 0), (0, 0), (0, 0)]


def test_resize_image_square_pads_without_scaling():
    img = ramp_image(100, 200)
    out, window, scale, padding, crop = utils.resize_image(img, min_dim=50, max_dim=256, mode="square")
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert scale == 1 and crop is None
    assert padding == [(78, 78), (28, 28), (0, 0)]
    assert window == (78, 28, 178, 228)
    np.testing.assert_array_equal(out[78:178, 28:228], img)
    assert out[:78].sum() == 0 and out[178:].sum() == 0 and out[:, :28].sum() == 0


def test_resize_image_square_odd_padding_goes_to_bottom():
    img = ramp_image(101, 100)
    _, window, _, padding, _ = utils.resize_image(img, max_dim=128, mode="square")
    assert padding == [(13, 14), (14, 14), (0, 0)]
    assert window == (13, 14, 114, 114)


def test_resize_image_square_shrinks_to_max_dim():
    img = np.full((100, 300, 3), 200, np.uint8)
    out, window, scale, padding, _ = utils.resize_image(img, min_dim=80, max_dim=150, mode="square")
    assert scale == 0.5
    assert out.shape == (150, 150, 3) and out.dtype == np.uint8
    assert padding == [(50, 50), (0, 0), (0, 0)]
    assert window == (50, 0, 100, 150)
    assert np.all(out[50:100] == 200)  # constant stays constant (rounded, not truncated)


def test_resize_image_square_upscales_to_min_dim():
    img = ramp_image(50, 60).astype(np.float32)
    out, window, scale, padding, _ = utils.resize_image(img, min_dim=100, max_dim=256, mode="square")
    assert scale == 2 and out.dtype == np.float32
    assert padding == [(78, 78), (68, 68), (0, 0)]
    assert window == (78, 68, 178, 188)


def test_resize_image_min_scale():
    img = ramp_image(100, 100)
    out, window, scale, _, _ = utils.resize_image(img, min_dim=50, max_dim=512, min_scale=1.5, mode="square")
    assert scale == 1.5
    assert window == (181, 181, 331, 331)  # 150 px image, top = (512 - 150) // 2


def test_resize_image_pad64():
    img = ramp_image(100, 130, np.uint16)
    out, window, scale, padding, crop = utils.resize_image(img, min_dim=64, max_dim=32, mode="pad64")
    assert scale == 1 and crop is None  # max_dim is ignored
    assert out.shape == (128, 192, 3) and out.dtype == np.uint16
    assert padding == [(14, 14), (31, 31), (0, 0)]
    assert window == (14, 31, 114, 161)
    np.testing.assert_array_equal(out[14:114, 31:161], img)
    # Already multiples of 64: no padding; odd totals put the extra pixel after.
    _, window, _, padding, _ = utils.resize_image(ramp_image(128, 64), min_dim=64, mode="pad64")
    assert padding == [(0, 0), (0, 0), (0, 0)] and window == (0, 0, 128, 64)
    _, _, _, padding, _ = utils.resize_image(ramp_image(101, 64), min_dim=64, mode="pad64")
    assert padding[0] == (13, 14)


def test_resize_image_pad64_asserts_min_dim_multiple_of_64():
    with pytest.raises(AssertionError):
        utils.resize_image(ramp_image(100, 100), min_dim=100, mode="pad64")


def test_resize_image_crop_inside_bounds():
    img = ramp_image(300, 400)
    seen = set()
    for seed in range(6):
        out, window, scale, padding, crop = utils.resize_image(
            img, min_dim=256, max_dim=1024, mode="crop", rng=np.random.default_rng(seed))
        y, x, h, w = crop
        assert (h, w) == (256, 256) and 0 <= y <= 44 and 0 <= x <= 144
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8
        assert window == (0, 0, 256, 256) and scale == 1
        np.testing.assert_array_equal(out, img[y:y + 256, x:x + 256])
        seen.add((y, x))
    assert len(seen) > 1
    out, _, _, _, crop = utils.resize_image(img, min_dim=256, mode="crop")  # python random
    assert 0 <= crop[0] <= 44 and 0 <= crop[1] <= 144


def test_resize_image_bad_mode_raises():
    with pytest.raises(Exception, match="Mode bogus not supported"):
        utils.resize_image(ramp_image(10, 10), 64, 64, mode="bogus")


def test_resize_mask_scale_pad_crop_and_dtype():
    mask = np.zeros((4, 5, 2), bool)
    mask[1, 2, 0] = True
    mask[3, 4, 1] = True
    out = utils.resize_mask(mask, 2, [(1, 2), (3, 0), (0, 0)])
    assert out.shape == (11, 13, 2) and out.dtype == bool
    expected = np.pad(np.repeat(np.repeat(mask, 2, 0), 2, 1), [(1, 2), (3, 0), (0, 0)])
    np.testing.assert_array_equal(out, expected)
    m8 = mask.astype(np.uint8)
    out8 = utils.resize_mask(m8, 2, None, crop=(2, 4, 4, 4))
    assert out8.dtype == np.uint8 and out8.shape == (4, 4, 2)
    np.testing.assert_array_equal(out8, expected[3:7, 7:11].astype(np.uint8))
    empty = utils.resize_mask(np.zeros((4, 5, 0), bool), 2, [(1, 1), (0, 0), (0, 0)])
    assert empty.shape == (10, 10, 0)


def test_resize_mask_matches_resize_image_shape():
    img = ramp_image(77, 123)
    mask = np.zeros((77, 123, 1), bool)
    mask[10:40, 20:90] = True
    for mode, kw in [("square", dict(min_dim=50, max_dim=96)), ("square", dict(min_dim=200, max_dim=400)),
                     ("pad64", dict(min_dim=128))]:
        out, window, scale, padding, crop = utils.resize_image(img, mode=mode, **kw)
        m = utils.resize_mask(mask, scale, padding, crop)
        assert m.shape[:2] == out.shape[:2]
        box = utils.extract_bboxes(m)[0]
        assert window[0] <= box[0] and box[2] <= window[2]


def test_minimize_expand_round_trip():
    mask = np.zeros((64, 80, 2), np.uint8)
    mask[10:30, 20:50, 0] = 1
    yy, xx = np.mgrid[:64, :80]
    mask[..., 1] = ((yy - 40) ** 2 + (xx - 50) ** 2) <= 15 ** 2
    bbox = utils.extract_bboxes(mask)
    mini = utils.minimize_mask(bbox, mask, (56, 56))
    assert mini.shape == (56, 56, 2) and mini.dtype == bool
    assert mini[..., 0].all()
    full = utils.expand_mask(bbox, mini, (64, 80, 3))
    assert full.shape == (64, 80, 2) and full.dtype == bool
    np.testing.assert_array_equal(full[..., 0], mask[..., 0].astype(bool))
    assert utils.compute_overlaps_masks(full[..., 1:], mask[..., 1:])[0, 0] > 0.95
    # Zero instances.
    assert utils.minimize_mask(np.zeros((0, 4), np.int32), np.zeros((64, 80, 0)), (56, 56)).shape == (56, 56, 0)
    assert utils.expand_mask(np.zeros((0, 4), np.int32), np.zeros((56, 56, 0), bool), (64, 80)).shape == (64, 80, 0)


def test_minimize_mask_zero_area_box_raises():
    with pytest.raises(Exception, match="Invalid bounding box with area of zero"):
        utils.minimize_mask(np.array([[5, 5, 5, 9]]), np.ones((10, 10, 1), bool), (8, 8))


def test_unmold_mask():
    full = utils.unmold_mask(np.ones((28, 28), np.float32), (2, 3, 6, 8), (10, 10, 3))
    expected = np.zeros((10, 10), bool)
    expected[2:6, 3:8] = True
    assert full.dtype == bool
    np.testing.assert_array_equal(full, expected)
    assert not utils.unmold_mask(np.full((28, 28), 0.4), (2, 3, 6, 8), (10, 10)).any()
    assert utils.unmold_mask(np.full((28, 28), 0.5), (2, 3, 6, 8), (10, 10)).sum() == 20  # >= 0.5
    clipped = utils.unmold_mask(np.ones((28, 28)), (-2, 7, 4, 14), (10, 10))
    assert clipped.sum() == 4 * 3


def test_resize_wrapper_accepts_bool():
    out = utils.resize(np.ones((4, 4), bool), (8, 8))
    assert out.shape == (8, 8) and np.allclose(out, 1.0)


############################################################
#  Matching and AP
############################################################

def masks_from_boxes(boxes, shape=(40, 40)):
    m = np.zeros(shape + (len(boxes),), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        m[y1:y2, x1:x2, i] = True
    return m


GT_BOXES = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
GT_IDS = np.array([1, 2], np.int64)


def test_compute_ap_perfect():
    gt_masks = masks_from_boxes(GT_BOXES).astype(np.uint8)
    ap, precisions, recalls, overlaps = utils.compute_ap(
        GT_BOXES, GT_IDS, gt_masks, GT_BOXES, np.array([1, 2], np.uint8), np.array([0.9, 0.8]), gt_masks)
    assert ap == pytest.approx(1.0)
    np.testing.assert_allclose(overlaps, np.eye(2))
    assert utils.compute_ap_range(GT_BOXES, GT_IDS, gt_masks, GT_BOXES, GT_IDS,
                                  np.array([0.9, 0.8]), gt_masks, verbose=0) == pytest.approx(1.0)


def test_compute_ap_half_missed_and_false_positive():
    gt_masks = masks_from_boxes(GT_BOXES)
    pred_boxes = np.array([[0, 0, 10, 10]])
    ap, precisions, recalls, _ = utils.compute_ap(
        GT_BOXES, GT_IDS, gt_masks, pred_boxes, np.array([1]), np.array([0.9]), masks_from_boxes(pred_boxes))
    assert ap == pytest.approx(0.5)
    # Ranked: hit (0.9), false positive (0.8), hit (0.7) -> precision 1, 1/2, 2/3 at recall .5, .5, 1
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    pred_boxes = np.array([[20, 20, 30, 30], [0, 30, 5, 40], [0, 0, 10, 10]])
    ap, precisions, recalls, _ = utils.compute_ap(
        GT_BOXES, GT_IDS, gt_masks, pred_boxes, np.array([2, 1, 1]), np.array([0.7, 0.8, 0.9]),
        masks_from_boxes(pred_boxes))
    assert ap == pytest.approx(5 / 6)
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precisions, [1, 1, 2 / 3, 2 / 3, 0])


def test_compute_matches_wrong_class_is_unmatched():
    gt_masks = masks_from_boxes(GT_BOXES[:1])
    gt_match, pred_match, overlaps = utils.compute_matches(
        GT_BOXES[:1], [1], gt_masks, GT_BOXES[:1], [2], [0.9], gt_masks)
    np.testing.assert_array_equal(gt_match, [-1])
    np.testing.assert_array_equal(pred_match, [-1])
    np.testing.assert_allclose(overlaps, [[1.0]])
    ap = utils.compute_ap(GT_BOXES[:1], [1], gt_masks, GT_BOXES[:1], [2], [0.9], gt_masks)[0]
    assert ap == 0.0


def test_compute_matches_skips_wrong_class_then_matches_next_gt_and_trims_padding():
    gt_boxes = np.array([[0, 0, 10, 10], [0, 2, 10, 12], [0, 0, 0, 0]])  # last row = padding
    gt_masks = masks_from_boxes(gt_boxes)
    pred_boxes = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    # Pred IoU: 1.0 with GT0 (class 2), 0.667 with GT1 (class 1); pred is class 1.
    gt_match, pred_match, overlaps = utils.compute_matches(
        gt_boxes, np.array([2, 1, 0]), gt_masks, pred_boxes, np.array([1, 0]), np.array([0.9, 0]),
        masks_from_boxes(pred_boxes))
    assert overlaps.shape == (1, 2)
    np.testing.assert_array_equal(gt_match, [-1, 0])
    np.testing.assert_array_equal(pred_match, [1])
    # Below the IoU threshold: no match.
    _, pred_match, _ = utils.compute_matches(
        gt_boxes, np.array([2, 1, 0]), gt_masks, pred_boxes, np.array([1, 0]), np.array([0.9, 0]),
        masks_from_boxes(pred_boxes), iou_threshold=0.7)
    np.testing.assert_array_equal(pred_match, [-1])


def test_compute_recall():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 25], [100, 100, 110, 110]])
    recall, positive_ids = utils.compute_recall(pred, gt, 0.5)
    assert recall == pytest.approx(2 / 3)  # GT0 (twice) and GT1 (IoU exactly 0.5)
    np.testing.assert_array_equal(positive_ids, [0, 1, 2])


############################################################
#  Dataset
############################################################

def make_dataset():
    ds = utils.Dataset()
    ds.add_class("coco", 1, "person, human")
    ds.add_class("coco", 1, "duplicate is skipped")
    ds.add_class("coco", 3, "car")
    ds.add_class("wbc", 1, "Basophil")
    ds.add_image("coco", 42, "/a/42.jpg", width=640, height=480)
    ds.add_image("wbc", "x7", "/b/x7.png", class_ids=[1])
    ds.prepare()
    return ds


def test_dataset_prepare_maps():
    ds = make_dataset()
    assert ds.num_classes == 4
    assert ds.class_names == ["BG", "person", "car", "Basophil"]
    np.testing.assert_array_equal(ds.class_ids, [0, 1, 2, 3])
    assert ds.num_images == 2
    assert isinstance(ds.image_ids, np.ndarray)
    np.testing.assert_array_equal(ds.image_ids, [0, 1])
    assert ds.class_from_source_map == {".0": 0, "coco.1": 1, "coco.3": 2, "wbc.1": 3}
    assert ds.image_from_source_map == {"coco.42": 0, "wbc.x7": 1}
    assert sorted(ds.sources) == ["", "coco", "wbc"]
    assert ds.source_class_ids["coco"] == [0, 1, 2]
    assert ds.source_class_ids["wbc"] == [0, 3]
    assert ds.source_class_ids[""] == [0]
    assert ds.map_source_class_id("coco.3") == 2
    with pytest.raises(KeyError):
        ds.map_source_class_id("coco.99")
    assert ds.get_source_class_id(3, "wbc") == 1
    with pytest.raises(AssertionError):
        ds.get_source_class_id(3, "coco")
    assert ds.image_info[0] == {"id": 42, "source": "coco", "path": "/a/42.jpg", "width": 640, "height": 480}
    assert ds.image_info[1]["class_ids"] == [1]
    assert ds.source_image_link(1) == "/b/x7.png"
    assert ds.image_reference(0) == ""


def test_dataset_initial_state_and_source_without_dot():
    ds = utils.Dataset()
    assert ds.image_info == [] and ds.image_ids == []
    assert ds.class_info == [{"source": "", "id": 0, "name": "BG"}]
    assert ds.source_class_ids == {}
    with pytest.raises(AssertionError):
        ds.add_class("co.co", 1, "x")


def test_dataset_load_mask_base_warns(caplog):
    ds = make_dataset()
    with caplog.at_level(logging.WARNING):
        mask, class_ids = ds.load_mask(0)
    assert "load_mask" in caplog.text
    assert mask.shape == (0, 0, 0)
    assert class_ids.shape == (0,) and class_ids.dtype == np.int32


def dataset_with_file(path):
    ds = utils.Dataset()
    ds.add_class("t", 1, "x")
    ds.add_image("t", 0, str(path))
    ds.prepare()
    return ds


def test_load_image_grey_rgba_rgb_16bit(tmp_path):
    grey = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) * 5
    Image.fromarray(grey).save(tmp_path / "grey.png")
    out = dataset_with_file(tmp_path / "grey.png").load_image(0)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)

    rgba = np.zeros((5, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = dataset_with_file(tmp_path / "rgba.png").load_image(0)
    assert out.shape == (5, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])

    rgb = ramp_image(5, 6)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(dataset_with_file(tmp_path / "rgb.png").load_image(0), rgb)

    g16 = np.array([[0, 257 * 100, 65535, 257 * 7]], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = dataset_with_file(tmp_path / "g16.png").load_image(0)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 100, 255, 7]])

    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = dataset_with_file(tmp_path / "la.png").load_image(0)
    assert out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


############################################################
#  Weights download (never touches the network)
############################################################

class FakeResponse:
    def __init__(self, payload, length):
        self.payload = payload
        self.headers = {"Content-Length": str(length)}
        self.pos = 0

    def read(self, n):
        chunk = self.payload[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_offline_raises_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    target = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(RuntimeError) as err:
        utils.download_trained_weights(str(target), verbose=0)
    assert "failed" in str(err.value) and str(target) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_download_size_check_and_success(tmp_path, monkeypatch):
    payload = b"\x89HDF\r\n\x1a\n" + b"x" * 3000
    target = tmp_path / "w.h5"
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload, len(payload) + 5))
    with pytest.raises(RuntimeError, match="failed"):
        utils.download_trained_weights(str(target), verbose=0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda *a, **k: FakeResponse(payload, len(payload)))
    utils.download_trained_weights(str(target), verbose=0)
    assert target.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]
    assert utils.COCO_MODEL_URL.endswith("/v2.0/mask_rcnn_coco.h5")


############################################################
#  Colour normalisation
############################################################

def test_normalize_colors_removes_a_colour_cast():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (40, 50, 3)).astype(np.uint8)
    cast = np.clip(image * np.array([0.6, 0.8, 0.5]) + np.array([90, 60, 30]), 0, 255)  # yellow
    cast = np.round(cast).astype(np.uint8)
    a = np_images.normalize_colors(image, "per-image")
    b = np_images.normalize_colors(cast, "per-image")
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_allclose(a.reshape(-1, 3).mean(0), 128, atol=0.6)
    np.testing.assert_allclose(a.reshape(-1, 3).std(0), 50, atol=0.6)
    # The same cell under another stain/white balance: equal up to the cast's rounding.
    assert np.abs(a.astype(int) - b).max() <= 2
    assert np.abs(image.astype(int) - cast).mean() > 20


def test_normalize_colors_none_and_flat_channels_and_bad_mode():
    image = np.full((8, 8, 3), 77, np.uint8)
    assert np_images.normalize_colors(image, "none") is image
    assert (np_images.normalize_colors(image, "per-image") == 128).all()   # no division by 0
    with pytest.raises(ValueError, match="COLOR_NORMALIZATION='grey'"):
        np_images.normalize_colors(image, "grey")


def test_replacing_writes_whole_or_not_at_all(tmp_path):
    import os
    from mrcnn.durable import replacing
    from wbc.files import is_temp_name
    target = tmp_path / "counts.csv"
    with replacing(target) as f:
        f.write("first\n")
        (temp,) = [p for p in os.listdir(tmp_path) if p != "counts.csv"]
        assert is_temp_name(temp) and not target.exists()     # nothing under the name yet
    assert target.read_text() == "first\n"
    with open(tmp_path / "plain", "w"):
        pass
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode   # like open()
    with pytest.raises(RuntimeError):
        with replacing(target) as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first\n"
    assert sorted(os.listdir(tmp_path)) == ["counts.csv", "plain"]       # no temp left


@pytest.mark.parametrize("hard_links", [True, False])
def test_creating_never_replaces_a_file(tmp_path, monkeypatch, hard_links):
    import os
    from mrcnn.durable import creating
    if not hard_links:                        # a file system without them (FAT, some shares)
        def no_link(*args):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "1.png"
    with creating(target, "wb") as f:
        f.write(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        with creating(target, "wb") as f:
            f.write(b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["1.png"]                              # no temp left


def test_synth_and_lisc_writers_refuse_a_file_that_appeared(tmp_path):
    """A target that appears while synth or import-lisc writes (a second run into the same
    folder) is kept and reported, not replaced."""
    import os
    from wbc import lisc, synth
    from wbc.errors import UserError
    target = tmp_path / "1.png"
    target.write_bytes(b"theirs")
    with pytest.raises(UserError, match="appeared while writing"):
        synth._save_png(np.zeros((4, 4), np.uint8), str(target))
    with pytest.raises(UserError, match="appeared while importing"):
        lisc._write_new(str(target), lambda f: f.write(b"ours"))
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["1.png"]
    with pytest.raises(UserError, match="cannot read"):
        lisc._open_source(str(tmp_path / "missing.bmp"))
