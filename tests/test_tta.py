"""Test-time augmentation and ensembles (wbc/tta.py): views, their inverses, the merge of
detections."""
import itertools
import types

import numpy as np
import pytest

from wbc.tta import VIEWS, MergedModel, from_view, merge_detections, to_view


def result(masks, class_ids, scores):
    masks = np.stack(masks, axis=-1) if masks else np.zeros((6, 8, 0), bool)
    return {"rois": np.zeros((len(scores), 4), np.int32), "masks": masks,
            "class_ids": np.array(class_ids, np.int32), "scores": np.array(scores, np.float32)}


def box_mask(y1, x1, y2, x2, shape=(6, 8)):
    m = np.zeros(shape, bool)
    m[y1:y2, x1:x2] = True
    return m


def test_the_eight_views_are_distinct_and_each_is_undone():
    image = np.arange(5 * 7 * 2).reshape(5, 7, 2)
    views = [to_view(image, t, m) for t, m in VIEWS]
    assert len(VIEWS) == 8
    for a, b in itertools.combinations(views, 2):
        assert a.shape != b.shape or not np.array_equal(a, b)
    for (t, m), view in zip(VIEWS, views):
        np.testing.assert_array_equal(from_view(view, t, m), image)


def test_merge_sums_scores_per_class_over_views_and_votes_masks():
    cell = box_mask(1, 1, 5, 5)
    bigger = box_mask(1, 1, 5, 6)                 # IoU 0.8 with cell: same cluster
    stray = box_mask(0, 6, 2, 8)                  # another place, seen once
    views = ([result([cell], [1], [0.9])] * 5 + [result([bigger], [1], [0.9])]
             + [result([cell, stray], [2, 3], [0.8, 0.9])] * 2)
    merged = merge_detections(views, num_classes=4, min_confidence=0.5)
    assert merged["class_ids"].tolist() == [1]            # 6 x 0.9 beats 2 x 0.8
    assert merged["scores"][0] == pytest.approx(6 * 0.9 / 8)
    np.testing.assert_array_equal(merged["masks"][..., 0], cell)   # 7 of 8 votes for `cell`
    assert merged["rois"].tolist() == [[1, 1, 5, 5]]
    # below a low threshold: the stray cell (2 x 0.9 / 8) and the cell's second class (2 x 0.8
    # / 8, same mask) as well, as the model's own per-class output would have them
    low = merge_detections(views, num_classes=4, min_confidence=0.1)
    assert low["class_ids"].tolist() == [1, 3, 2]
    np.testing.assert_allclose(low["scores"], [6 * 0.9 / 8, 2 * 0.9 / 8, 2 * 0.8 / 8], rtol=1e-6)
    np.testing.assert_array_equal(low["masks"][..., 2], cell)


def test_merge_of_nothing_has_the_shapes_of_an_empty_detection():
    merged = merge_detections([result([], [], [])] * 8, num_classes=6)
    assert merged["masks"].shape == (6, 8, 0) and merged["rois"].shape == (0, 4)
    assert merged["class_ids"].dtype == np.int32 and merged["scores"].dtype == np.float32


def test_tta_model_maps_every_view_back_to_the_original_frame():
    """A fake model that 'detects' the bright pixels of whatever view it is given."""
    image = np.zeros((6, 9, 3), np.uint8)
    image[1:3, 2:7] = 255                          # an off-centre, non-square bright patch
    seen = []

    def detect(images, verbose=0):
        view = images[0]
        seen.append(view.shape)
        mask = view[..., 0] > 128
        return [result([mask], [2], [0.9])]

    fake = types.SimpleNamespace(detect=detect, config=types.SimpleNamespace(
        NUM_CLASSES=3, DETECTION_MAX_INSTANCES=100))
    (out,) = MergedModel([fake], min_confidence=0.5, views=VIEWS).detect([image])
    assert sorted(set(seen)) == [(6, 9, 3), (9, 6, 3)] and len(seen) == 8
    assert out["class_ids"].tolist() == [2] and out["scores"][0] == pytest.approx(0.9)
    np.testing.assert_array_equal(out["masks"][..., 0], image[..., 0] > 128)


def fake_model(class_id, score, num_classes=4, max_instances=100):
    """A model that 'detects' the bright pixels of any image as one cell of class_id."""
    def detect(images, verbose=0):
        return [result([images[0][..., 0] > 128], [class_id], [score])]
    return types.SimpleNamespace(detect=detect, config=types.SimpleNamespace(
        NUM_CLASSES=num_classes, DETECTION_MAX_INSTANCES=max_instances))


def test_an_ensemble_merges_the_models_answers_per_cell_and_class():
    image = np.zeros((6, 8, 3), np.uint8)
    image[1:4, 2:6] = 255
    models = [fake_model(2, 0.9), fake_model(2, 0.7), fake_model(3, 0.6)]
    (out,) = MergedModel(models, min_confidence=0.15, views=VIEWS[:1]).detect([image])
    # one cell; class 2 scores (0.9 + 0.7) / 3, class 3 scores 0.6 / 3
    assert out["class_ids"].tolist() == [2, 3]
    np.testing.assert_allclose(out["scores"], [1.6 / 3, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(out["masks"][..., 0], image[..., 0] > 128)
    (both,) = MergedModel(models[:2], min_confidence=0.5, views=VIEWS).detect([image])   # 2 models x 8 views
    assert both["class_ids"].tolist() == [2] and both["scores"][0] == pytest.approx(0.8)
    (unfiltered,) = MergedModel(models, min_confidence=None, views=VIEWS[:1]).detect([image])
    assert unfiltered["class_ids"].tolist() == [2, 3]


def test_merged_detections_keep_the_config_cap_of_the_best_scored():
    """8 members, each finding two cells no other member finds: 16 clusters, cap 5."""
    def member(k):
        def detect(images, verbose=0):
            cells = [box_mask(0, 2 * k, 1, 2 * k + 1, (4, 16)),
                     box_mask(2, 2 * k, 3, 2 * k + 1, (4, 16))]
            return [result(cells, [1, 2], [0.9 - 0.01 * k, 0.5])]
        return types.SimpleNamespace(detect=detect, config=types.SimpleNamespace(
            NUM_CLASSES=3, DETECTION_MAX_INSTANCES=5))

    members = [member(k) for k in range(8)]
    image = np.zeros((4, 16, 3), np.uint8)
    everything = merge_detections([m.detect([image])[0] for m in members], 3)
    assert len(everything["scores"]) == 16
    (out,) = MergedModel(members, min_confidence=None, views=VIEWS[:1]).detect([image])
    assert out["masks"].shape == (4, 16, 5) and out["class_ids"].tolist() == [1] * 5
    np.testing.assert_allclose(out["scores"], [(0.9 - 0.01 * k) / 8 for k in range(5)],
                               rtol=1e-6)


def test_models_with_different_classes_cannot_be_merged():
    with pytest.raises(ValueError, match="different numbers of classes"):
        MergedModel([fake_model(1, 0.9, num_classes=4), fake_model(1, 0.9, num_classes=6)], 0.5,
                    views=VIEWS)
