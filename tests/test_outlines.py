"""One outline per cell (wbc.outlines): a detection mostly on a better one's pixels is dropped; the
mask IoU every pair of detections is compared by."""
import numpy as np

from wbc.outlines import SAME_CELL_IOU, mask_iou_matrix, one_outline_per_cell, one_per_cell


def square(y, x, size, shape=(60, 80)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def test_mask_iou_matrix():
    a, b = square(0, 0, 2), square(0, 1, 2)          # 4 px each, 2 shared
    iou = mask_iou_matrix(np.stack([a, b, np.zeros_like(a)], -1))
    np.testing.assert_allclose(iou, [[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 0]], atol=1e-6)
    blobs = np.random.default_rng(0).random((30, 40, 12)) > 0.7     # scattered, overlapping
    blobs[:, :, 5] = False
    blobs[2:9, 3:7, 6] = blobs[20:28, 30:39, 7] = True
    flat = blobs.reshape(-1, 12).astype(np.float64)
    inter = flat.T @ flat
    union = inter.diagonal()[:, None] + inter.diagonal()[None, :] - inter
    brute = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.testing.assert_allclose(mask_iou_matrix(blobs), brute, atol=1e-6)


def test_one_per_cell_keeps_the_first_of_each_overlapping_group():
    iou = np.array([[1.0, 0.9, 0.0, 0.3],
                    [0.9, 1.0, 0.0, 0.6],
                    [0.0, 0.0, 1.0, 0.0],
                    [0.3, 0.6, 0.0, 1.0]])
    # 1 repeats 0; 3 overlaps only the dropped 1 above the bar, and 0 at 0.3: kept
    assert one_per_cell(iou) == [0, 2, 3]
    at_bar = np.array([[1.0, SAME_CELL_IOU], [SAME_CELL_IOU, 1.0]])
    assert one_per_cell(at_bar) == [0, 1]                 # more than the bar is the same cell
    assert one_per_cell(np.zeros((0, 0))) == []


def test_a_cell_named_twice_keeps_its_better_name():
    cell, other = square(10, 10, 20), square(35, 50, 15)
    masks = np.stack([square(10, 11, 20), other, cell], -1)       # unsorted scores
    result = {"rois": np.arange(12).reshape(3, 4), "class_ids": np.array([4, 1, 3]),
              "scores": np.array([0.8, 0.75, 0.9], np.float32), "masks": masks,
              "extra": "kept as is"}
    out = one_outline_per_cell(result)
    assert out["class_ids"].tolist() == [3, 1]                    # best first, the 0.8 dropped
    assert out["scores"].tolist() == [np.float32(0.9), np.float32(0.75)]
    assert out["rois"].tolist() == [[8, 9, 10, 11], [4, 5, 6, 7]]
    assert np.array_equal(out["masks"], np.stack([cell, other], -1))
    assert out["extra"] == "kept as is"
    empty = {"rois": np.zeros((0, 4), np.int32), "class_ids": np.zeros(0, np.int32),
             "scores": np.zeros(0, np.float32), "masks": np.zeros((60, 80, 0), bool)}
    assert one_outline_per_cell(empty)["masks"].shape == (60, 80, 0)


class TwiceNamedModel:
    """Stands in for an inference model: per image, one cell found by two regions that name
    it Neutrophil (0.9) and Monocyte (0.8), and a second cell apart, a Lymphocyte (0.75)."""

    def detect(self, images):
        shape = images[0].shape[:2]
        masks = np.stack([square(4, 4, 16, shape), square(4, 5, 16, shape),
                          square(26, 40, 12, shape)], -1)
        return [{"rois": np.array([[4, 4, 20, 20], [4, 5, 20, 21], [26, 40, 38, 52]], np.int32),
                 "class_ids": np.array([5, 4, 3], np.int32),
                 "scores": np.array([0.9, 0.8, 0.75], np.float32), "masks": masks}]


def test_detect_outlines_and_counts_a_cell_once(tmp_path):
    import csv
    import json

    from PIL import Image

    from wbc.dataset import CLASS_NAMES
    from wbc.detect import detect_files
    Image.new("RGB", (64, 48), (200, 180, 190)).save(tmp_path / "smear.png")
    out = tmp_path / "out"
    summary = detect_files(TwiceNamedModel(), [str(tmp_path / "smear.png")], str(out),
                           CLASS_NAMES, progress=False)
    assert summary.startswith("1 images, 2 cells (1 Lymphocyte, 1 Neutrophil)"), summary
    with open(out / "counts.csv") as f:
        (row,) = csv.DictReader(f)
    assert (row["Neutrophil"], row["Monocyte"], row["Lymphocyte"]) == ("1", "0", "1")
    results = json.loads((out / "detections.json").read_text())
    assert sorted(r["category_id"] for r in results) == [3, 5]
    labels = np.asarray(Image.open(out / "smear_labels.png"))
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
