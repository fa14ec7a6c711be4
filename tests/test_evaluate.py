"""wbc.evaluate and wbc.report: hand-made ground truth and predictions, answers known in advance."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wbc import evaluate as ev
from wbc import report as rp
from wbc.errors import UserError

NAMES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
H, W = 60, 80


# ---------------------------------------------------------------- helpers

def square(y, x, size, shape=(H, W)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def gt(image_id, masks, class_ids, shape=(H, W), **extra):
    stack = np.stack(masks, -1) if masks else np.zeros(shape + (0,), bool)
    return {"image_id": image_id, "file_name": "img{}.png".format(image_id),
            "height": shape[0], "width": shape[1], "masks": stack,
            "class_ids": np.array(class_ids, np.int32), **extra}


def pred(image_id, masks, class_ids, scores, shape=(H, W)):
    stack = np.stack(masks, -1) if masks else np.zeros(shape + (0,), bool)
    return {"image_id": image_id, "masks": stack, "class_ids": np.array(class_ids, np.int32),
            "scores": np.array(scores, np.float32)}


def three_images():
    """3 images, 5 cells of classes 1..5: two cells per image at most."""
    gts = [gt(1, [square(5, 5, 20), square(30, 40, 20)], [1, 2]),
           gt(2, [square(10, 10, 25), square(5, 50, 15)], [3, 4]),
           gt(3, [square(20, 20, 30)], [5])]
    return gts


def perfect_preds(gts, score=0.95):
    return [pred(g["image_id"], [g["masks"][:, :, i] for i in range(g["masks"].shape[2])],
                 g["class_ids"], [score] * len(g["class_ids"])) for g in gts]


# ---------------------------------------------------------------- metrics

def test_all_perfect():
    gts = three_images()
    m = ev.evaluate(gts, perfect_preds(gts), NAMES)
    for kind in ("mask", "box"):
        assert m["coco"][kind]["AP"] == pytest.approx(1.0)
        assert m["coco"][kind]["AP50"] == pytest.approx(1.0)
        assert m["coco"][kind]["AP75"] == pytest.approx(1.0)
    assert m["coco"]["mask"]["AP_large"] is None          # no cell >= 96^2 px here
    mat = np.array(m["confusion"]["matrix"])
    assert mat.shape == (6, 6)
    assert np.array_equal(mat, np.diag([1, 1, 1, 1, 1, 0]))
    for name in NAMES:
        c = m["per_class"][name]
        assert (c["support"], c["tp"], c["fp"], c["fn"]) == (1, 1, 0, 0)
        assert c["precision"] == c["recall"] == c["f1"] == 1.0
        assert c["mask_AP50"] == pytest.approx(1.0) and c["mask_AP"] == pytest.approx(1.0)
        assert c["box_AP"] == pytest.approx(1.0)
    assert m["segmentation"]["dice_mean"] == 1.0 and m["segmentation"]["iou_mean"] == 1.0
    assert m["segmentation"]["frac_matched_dice_ge_good"] == 1.0
    assert m["counting"]["count_mae_total"] == 0.0
    assert m["counting"]["differential_mae_pp_mean_over_classes"] == 0.0
    assert m["detection"]["class_accuracy"] == 1.0
    assert all(e["errors"] == 0 for e in m["per_image"])


def test_all_missed():
    gts = three_images()
    for preds in ([], [pred(g["image_id"], [], [], []) for g in gts]):
        m = ev.evaluate(gts, preds, NAMES)
        assert m["coco"]["mask"]["AP"] == 0.0 and m["coco"]["box"]["AP"] == 0.0
        assert m["coco"]["mask"]["AP50"] == 0.0
        mat = np.array(m["confusion"]["matrix"])
        assert mat[:5, 5].tolist() == [1, 1, 1, 1, 1]          # the "missed" column
        assert mat.sum() == 5
        for c in m["per_class"].values():
            assert c["recall"] == 0.0 and c["precision"] is None and c["f1"] == 0.0
            assert c["mask_AP"] == 0.0
        assert m["segmentation"]["dice_mean"] is None
        assert m["segmentation"]["frac_true_dice_ge_good"] == 0.0
        assert m["counting"]["n_images_differential"] == 0
        assert m["counting"]["differential_mae_pp_mean_over_classes"] is None
        assert m["counting"]["n_images_no_prediction"] == 3


def test_wrong_class_lands_in_its_cell():
    gts = three_images()
    preds = perfect_preds(gts)
    preds[1]["class_ids"] = np.array([3, 5], np.int32)        # Monocyte called Neutrophil
    m = ev.evaluate(gts, preds, NAMES)
    mat = np.array(m["confusion"]["matrix"])
    assert mat[3, 4] == 1 and mat[3, 3] == 0                  # row Monocyte, column Neutrophil
    assert mat[:5, 5].sum() == 0 and mat[5].sum() == 0        # nothing missed, nothing spurious
    assert np.trace(mat) == 4
    mono, neut = m["per_class"]["Monocyte"], m["per_class"]["Neutrophil"]
    assert (mono["tp"], mono["fn"], mono["recall"], mono["precision"]) == (0, 1, 0.0, None)
    assert (neut["tp"], neut["fp"], neut["precision"], neut["recall"]) == (1, 1, 0.5, 1.0)
    assert neut["f1"] == pytest.approx(2 / 3)
    assert m["detection"]["class_accuracy"] == pytest.approx(0.8)
    assert m["detection"]["f1"] == 1.0                         # found, just misnamed
    img = m["per_image"][1]
    assert (img["n_misclassified"], img["errors"]) == (1, 1)
    # Counting: image 2 has 1 Monocyte and 0 Neutrophils, predicted 0 and 1
    assert m["counting"]["count_mae_per_class"]["Monocyte"] == pytest.approx(1 / 3)
    assert m["counting"]["count_mae_total"] == 0.0


def test_shifted_mask_dice_by_hand():
    # 10x10 square shifted 2 px right: intersection 10*8 = 80, areas 100 + 100
    g = [gt(1, [square(10, 10, 10)], [2])]
    p = [pred(1, [square(10, 12, 10)], [2], [0.9])]
    m = ev.evaluate(g, p, NAMES)
    assert m["segmentation"]["dice_mean"] == pytest.approx(2 * 80 / 200)     # 0.8
    assert m["segmentation"]["iou_mean"] == pytest.approx(80 / 120)
    assert m["segmentation"]["frac_matched_dice_ge_good"] == 0.0
    assert m["per_class"]["Eosinophil"]["dice_mean"] == pytest.approx(0.8)
    assert m["per_image"][0]["matched"][0][:2] == [0, 0]
    # at IoU 0.667 the mask is a hit at 0.5 and 0.55..0.65, a miss from 0.7 up
    assert m["coco"]["mask"]["AP50"] == pytest.approx(1.0)
    assert m["coco"]["mask"]["AP"] == pytest.approx(0.4)
    assert m["coco"]["mask"]["AP75"] == 0.0


def test_coco_ap_agrees_with_hand_computation():
    # one image, 3 true cells of class 1; detections by score: hit, false alarm, hit
    cells = [square(2, 2, 12), square(2, 30, 12), square(30, 2, 12)]
    g = [gt(1, cells, [1, 1, 1])]
    p = [pred(1, [cells[0], square(40, 60, 10), cells[1]], [1, 1, 1], [0.9, 0.8, 0.7])]
    m = ev.evaluate(g, p, NAMES, min_confidence=0.5)
    # recall/precision after each detection: (1/3, 1), (1/3, 1/2), (2/3, 2/3); the
    # interpolated precision is 1 for recall <= 1/3 (0.00..0.33: 34 of COCO's 101 recall
    # points), 2/3 for recall in (1/3, 2/3] (0.34..0.66: 33 points), 0 above (34 points)
    hand = (34 * 1.0 + 33 * (2 / 3) + 34 * 0.0) / 101
    for kind in ("mask", "box"):           # every hit is exact: same at every IoU
        assert m["coco"][kind]["AP"] == pytest.approx(hand, abs=1e-9)
        assert m["coco"][kind]["AP50"] == pytest.approx(hand, abs=1e-9)
    assert m["per_class"]["Basophil"]["mask_AP50"] == pytest.approx(hand, abs=1e-9)
    assert m["per_class"]["Eosinophil"]["mask_AP"] is None          # no support
    curve = m["pr_curves"]["precision"]["Basophil"]
    assert curve[:34] == pytest.approx([1.0] * 34)
    assert curve[34:67] == pytest.approx([2 / 3] * 33)
    assert curve[67:] == [0.0] * 34
    assert m["pr_curves"]["precision"]["Eosinophil"] is None


def test_f1_by_hand():
    # class 1: 4 true cells, 3 detections of which 2 hit, plus 1 miss -> P 2/3, R 2/4
    cells = [square(2, 2, 10), square(2, 20, 10), square(2, 40, 10), square(30, 2, 10)]
    g = [gt(1, cells, [1, 1, 1, 1])]
    p = [pred(1, [cells[0], cells[1], square(40, 60, 10)], [1, 1, 1], [0.9, 0.8, 0.75])]
    m = ev.evaluate(g, p, NAMES, min_confidence=0.7)
    b = m["per_class"]["Basophil"]
    assert (b["tp"], b["fp"], b["fn"]) == (2, 1, 2)
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == pytest.approx(0.5)
    assert b["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))      # 4/7
    mat = np.array(m["confusion"]["matrix"])
    assert mat[0, 0] == 2 and mat[0, 5] == 2 and mat[5, 0] == 1
    # raising the confidence drops the 0.75 false alarm
    b = ev.evaluate(g, p, NAMES, min_confidence=0.76)["per_class"]["Basophil"]
    assert (b["tp"], b["fp"], b["fn"], b["precision"]) == (2, 0, 2, 1.0)


def test_counting_mae_by_hand():
    # image 1: true 2 Lymphocytes + 1 Neutrophil; predicted 1 Lymphocyte + 2 Neutrophils
    # image 2: true 1 Basophil;                 predicted 1 Basophil + 1 Eosinophil
    c = [square(2, 2, 10), square(2, 20, 10), square(2, 40, 10), square(30, 2, 10)]
    g = [gt(1, c[:3], [3, 3, 5]), gt(2, c[:1], [1])]
    p = [pred(1, [c[0], c[2], c[3]], [3, 5, 5], [0.9, 0.9, 0.9]),
         pred(2, [c[0], c[3]], [1, 2], [0.9, 0.8])]
    cnt = ev.evaluate(g, p, NAMES)["counting"]
    assert cnt["count_mae_per_class"] == pytest.approx(
        {"Basophil": 0.0, "Eosinophil": 0.5, "Lymphocyte": 0.5, "Monocyte": 0.0,
         "Neutrophil": 0.5})
    assert cnt["count_mae_total"] == pytest.approx((0 + 1) / 2)
    assert cnt["count_mae_mean_over_classes"] == pytest.approx(1.5 / 5)
    # differentials (%): image 1 true L 66.7 N 33.3, pred L 33.3 N 66.7 -> |d| 33.3 each;
    # image 2 true B 100, pred B 50 E 50 -> |d| 50 each
    d = cnt["differential_mae_pp_per_class"]
    assert d["Basophil"] == pytest.approx(25.0) and d["Eosinophil"] == pytest.approx(25.0)
    assert d["Lymphocyte"] == pytest.approx(100 / 6) and d["Neutrophil"] == pytest.approx(100 / 6)
    assert d["Monocyte"] == 0.0
    assert cnt["totals_true"]["Lymphocyte"] == 2 and cnt["totals_pred"]["Neutrophil"] == 2
    assert cnt["pooled_pct_true"]["Basophil"] == pytest.approx(25.0)


def test_confidence_and_greedy_order():
    # two detections on one cell that are not one outline (mask IoU 0.33 with each other,
    # 0.6 with the cell): the higher score takes it, the other is spurious; a detection
    # below min_confidence is ignored by the matching but counted by COCO
    cell = square(10, 10, 20)
    g = [gt(1, [cell], [4])]
    p = [pred(1, [square(10, 15, 20), square(10, 5, 20), square(40, 50, 10)], [4, 3, 1],
              [0.8, 0.9, 0.3])]
    m = ev.evaluate(g, p, NAMES, min_confidence=0.5)
    assert m["per_image"][0]["matched"][0][:2] == [0, 1]         # score 0.9 wins (class 3)
    assert m["per_image"][0]["spurious"] == [0]
    assert m["n_predictions"] == 3 and m["n_predictions_used"] == 2
    mat = np.array(m["confusion"]["matrix"])
    assert mat[3, 2] == 1 and mat[5, 3] == 1


def test_a_second_outline_of_a_cell_is_not_a_cell():
    # Two regions over one cell naming it differently (mask IoU 0.90): at the threshold the
    # better scored is the cell and the other is neither matched nor spurious nor counted;
    # COCO AP still ranks it (it is the only Monocyte detection, and right).
    cell = square(10, 10, 20)
    g = [gt(1, [cell], [4])]
    p = [pred(1, [square(10, 11, 20), cell, square(40, 50, 10)], [4, 3, 1], [0.8, 0.9, 0.75])]
    m = ev.evaluate(g, p, NAMES, min_confidence=0.5)
    img = m["per_image"][0]
    assert img["matched"][0][:2] == [0, 1] and img["spurious"] == [2]
    assert img["n_pred"] == 2 and m["n_predictions_used"] == 2
    assert img["pred_counts"] == {"Basophil": 1, "Eosinophil": 0, "Lymphocyte": 1,
                                  "Monocyte": 0, "Neutrophil": 0}
    assert m["per_class"]["Monocyte"]["mask_AP50"] == pytest.approx(1.0)
    assert m["thresholds"]["same_cell_iou"] == 0.5


def test_hundreds_of_detections_on_one_image():
    # evaluate --tta can merge more than 255 detections on one image; pycocotools' area() fails
    # on a list that long under NumPy 2, so areas are asked for in batches.
    cell = square(10, 10, 20)
    specks = [np.zeros((H, W), bool) for _ in range(299)]
    for k, m in enumerate(specks):
        m[k // W, k % W] = True                       # 299 one-pixel detections, all different
    specks[0][:, :] = False
    specks[0][40:43, 50:54] = True                    # one of 12 px
    m = ev.evaluate([gt(1, [cell], [5])], [pred(1, [cell] + specks, [5] * 300,
                                                  [0.9] + [0.8] * 299)], NAMES)
    img = m["per_image"][0]
    assert img["matched"][0][:2] == [0, 0] and len(img["spurious"]) == 299
    assert m["per_class"]["Neutrophil"]["mask_AP50"] == pytest.approx(1.0)
    record = ev.prepare_records([gt(1, [cell], [5])], [pred(1, [cell] + specks, [5] * 300,
                                                            [0.5] * 300)], 5)[0]
    assert record["pr_areas"].tolist() == [400, 12] + [1] * 298


def test_empty_inputs_give_nulls():
    m = ev.evaluate([], [], NAMES)
    assert m["n_images"] == 0 and m["coco"]["mask"]["AP"] is None
    assert m["micro"]["f1"] is None and m["counting"]["count_mae_total"] is None
    json.dumps(m, allow_nan=False)
    # images without any cell, and detections there: all spurious
    g = [gt(1, [], [])]
    m = ev.evaluate(g, [pred(1, [square(5, 5, 10)], [2], [0.9])], NAMES)
    assert m["coco"]["mask"]["AP"] is None
    assert m["micro"]["precision"] == 0.0 and m["micro"]["recall"] is None
    assert np.array(m["confusion"]["matrix"])[5, 1] == 1
    assert m["counting"]["differential_mae_pp_mean_over_classes"] is None
    text = json.dumps(m, allow_nan=False)
    assert '"recall": null' in text


def test_bad_inputs_raise_user_error():
    g = [gt(1, [square(5, 5, 10)], [1])]
    with pytest.raises(UserError, match="outside 1..5"):
        ev.evaluate(g, [pred(1, [square(5, 5, 10)], [6], [0.9])], NAMES)
    with pytest.raises(UserError, match="not in the ground truth"):
        ev.evaluate(g, [pred(7, [square(5, 5, 10)], [1], [0.9])], NAMES)
    with pytest.raises(UserError, match="masks are"):
        ev.evaluate(g, [pred(1, [square(5, 5, 10, shape=(10, 10))], [1], [0.9],
                             shape=(10, 10))], NAMES)


# ---------------------------------------------------------------- COCO format

def test_coco_gt_and_results_format():
    gts = three_images()
    d = ev.to_coco_gt(gts, NAMES)
    assert [c["name"] for c in d["categories"]] == NAMES
    assert [c["id"] for c in d["categories"]] == [1, 2, 3, 4, 5]
    assert len(d["images"]) == 3 and len(d["annotations"]) == 5
    a = d["annotations"][1]
    assert a["bbox"] == [40.0, 30.0, 20.0, 20.0] and a["area"] == 400.0
    assert isinstance(a["segmentation"]["counts"], str) and a["id"] >= 1
    preds = perfect_preds(gts)
    preds[0]["rois"] = np.array([[5, 5, 25, 25], [30, 40, 50, 60]])
    res = ev.to_coco_results(preds)
    assert len(res) == 5 and res[1]["bbox"] == [40.0, 30.0, 20.0, 20.0]
    assert res[2]["bbox"] == [10.0, 10.0, 25.0, 25.0]          # derived from the mask
    json.loads(json.dumps({"gt": d, "res": res}))
    from pycocotools.coco import COCO
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = d
        coco.createIndex()
        coco.loadRes(res)


def test_load_coco_results_round_trip(tmp_path):
    gts = three_images()
    preds = perfect_preds(gts)
    preds[2]["scores"] = np.array([0.42], np.float32)
    preds[1]["class_ids"] = np.array([3, 5], np.int32)
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(ev.to_coco_results(preds)))
    back = ev.load_coco_results(str(path), gts)
    assert [b["image_id"] for b in back] == [1, 2, 3]
    for a, b in zip(preds, back):
        assert np.array_equal(a["masks"], b["masks"]) and b["masks"].dtype == bool
        assert np.array_equal(a["class_ids"], b["class_ids"])
        assert np.allclose(a["scores"], b["scores"])
    assert back[0]["rois"].tolist() == [[5, 5, 25, 25], [30, 40, 50, 60]]
    m1 = ev.evaluate(gts, preds, NAMES)
    m2 = ev.evaluate(gts, back, NAMES)
    assert m1["coco"] == m2["coco"] and m1["confusion"] == m2["confusion"]
    # an image without detections in the file gets an empty prediction
    path.write_text(json.dumps(ev.to_coco_results(preds[:1])))
    back = ev.load_coco_results(str(path), gts)
    assert back[2]["masks"].shape == (H, W, 0) and back[2]["scores"].size == 0


def test_load_coco_results_by_file_name(tmp_path):
    gts = three_images()
    for g in gts:
        g["file_name"] = "Basophil/" + g["file_name"]
    preds = perfect_preds(gts)
    for p, image_id in zip(preds, (70, 71, 72)):           # ids that mean nothing here
        p["file_name"] = "/data/wbc/val/image/Basophil/img{}.png".format(p["image_id"])
        p["image_id"] = image_id
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(ev.to_coco_results(preds)))
    back = ev.load_coco_results(str(path), gts)
    assert [b["image_id"] for b in back] == [1, 2, 3]
    assert np.array_equal(back[1]["masks"], gts[1]["masks"])
    preds[0]["file_name"] = "other/img99.png"
    path.write_text(json.dumps(ev.to_coco_results(preds)))
    with pytest.raises(UserError, match="img99.png"):
        ev.load_coco_results(str(path), gts)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid JSON"),
    ('{"a": 1}', "expected a JSON list"),
    ('{"images": [], "annotations": []}', "ground-truth file"),
    ('[{"image_id": 9, "category_id": 1, "score": 0.5, '
     '"segmentation": {"size": [60, 80], "counts": "0"}}]', "not in the dataset"),
    ('[{"image_id": 1, "category_id": 1, "score": 0.5}]', "no segmentation"),
    ('[{"image_id": 1, "category_id": 1, "score": 0.5, '
     '"segmentation": {"size": [10, 10], "counts": "0"}}]', "10x10"),
    ('[{"image_id": 1, "category_id": 1, "score": "high", '
     '"segmentation": {"size": [60, 80], "counts": "0"}}]', "score"),
])
def test_invalid_results_json_is_a_user_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        ev.load_coco_results(str(path), three_images())
    assert str(path) in str(info.value)
    with pytest.raises(UserError, match="not found"):
        ev.load_coco_results(str(tmp_path / "absent.json"), three_images())


# ---------------------------------------------------------------- report files

def png_size(path):
    with Image.open(path) as img:
        return img.size


def report_case():
    gts = three_images()
    gts[0]["image"] = np.full((H, W, 3), 200, np.uint8)
    preds = perfect_preds(gts)
    preds[1]["class_ids"] = np.array([3, 5], np.int32)              # one wrong class
    preds[2] = pred(3, [], [], [])                                    # one missed
    preds[0] = pred(1, [gts[0]["masks"][:, :, 0], gts[0]["masks"][:, :, 1],
                        square(2, 60, 8)], [1, 2, 4], [0.9, 0.9, 0.8])  # one spurious
    return gts, preds


def test_write_report_files(tmp_path):
    gts, preds = report_case()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "img2.png")
    gts[1]["path"] = str(tmp_path / "img2.png")
    m = ev.evaluate(gts, preds, NAMES)
    out = tmp_path / "report"
    meta = {"model": "logs/mask_rcnn_wbc_0030.h5", "dataset": "WBC", "subset": "val"}
    line = rp.write_report(m, gts, preds, NAMES, str(out), meta)
    assert isinstance(line, str) and "\n" not in line and line.startswith("val: 3 images")
    assert sorted(os.listdir(out)) == sorted(rp.REPORT_FILES)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model"] == meta["model"] and doc["subset"] == "val" and doc["dataset"] == "WBC"
    assert doc["thresholds"]["min_confidence"] == 0.7 and doc["versions"]["pycocotools"]
    assert doc["confusion"]["matrix"] == m["confusion"]["matrix"]
    assert doc["per_class"]["Neutrophil"]["f1"] == pytest.approx(m["per_class"]["Neutrophil"]["f1"])
    # one error each; ties put missed cells first, then the dataset's order
    assert [w["image_id"] for w in doc["worst_images"]] == [3, 1, 2]
    # detections.json holds what was scored: scored again it gives the same figures, and at
    # another threshold the figures of the model's detections at that threshold
    again = ev.load_coco_results(out / "detections.json", gts)
    for threshold in (0.7, 0.85):
        rescored, direct = (ev.evaluate(gts, p, NAMES, threshold) for p in (again, preds))
        for key in ("coco", "detection", "confusion", "per_class", "segmentation"):
            assert rescored[key] == direct[key], (threshold, key)
    assert rescored["detection"]["spurious"] == 0 != m["detection"]["spurious"]  # 0.8 < 0.85
    report = (out / "report.md").read_text()
    for text in NAMES + ["spurious", "missed", "confusion.png", "worst.png", "pr_curves.png",
                         "Count MAE", meta["model"], "not a second outline of a cell"]:
        assert text in report
    for name in ("confusion.png", "pr_curves.png", "worst.png"):
        assert png_size(out / name) == rp.PNG_SIZES[name]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []     # no temp left
    plain = tmp_path / "plain"
    plain.mkdir()                          # a new report folder gets os.mkdir's permissions
    assert out.stat().st_mode == plain.stat().st_mode
    # a run without errors still draws every picture
    m = ev.evaluate(gts, perfect_preds(gts), NAMES)
    rp.write_report(m, gts, perfect_preds(gts), NAMES, str(out), meta)
    assert png_size(out / "worst.png") == rp.PNG_SIZES["worst.png"]
    assert json.loads((out / "metrics.json").read_text())["worst_images"] == []


def test_write_report_empty_subset(tmp_path):
    m = ev.evaluate([], [], NAMES)
    line = rp.write_report(m, [], [], NAMES, str(tmp_path / "r"), {})
    assert "0 images" in line
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["coco"]["mask"]["AP"] is None and doc["segmentation"]["dice_mean"] is None


def test_failed_report_leaves_earlier_files(tmp_path, monkeypatch):
    gts, preds = report_case()
    m = ev.evaluate(gts, preds, NAMES)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("earlier run")
    (out / "metrics.json").write_text("{}")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(rp, "_plot_worst", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        rp.write_report(m, gts, preds, NAMES, str(out), {"subset": "val"})
    assert sorted(os.listdir(out)) == ["metrics.json", "report.md"]
    assert (out / "report.md").read_text() == "earlier run"
    assert os.listdir(tmp_path) == ["report"]                            # temp folder gone
    # failing at the last file (report.md) of a first run creates no output folder
    monkeypatch.undo()
    monkeypatch.setattr(rp, "_report_md", broken)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        rp.write_report(m, gts, preds, NAMES, str(fresh), {})
    assert not fresh.exists()


def test_evaluate_results_file(tmp_path):
    gts = three_images()
    path = tmp_path / "det.json"
    path.write_text(json.dumps(ev.to_coco_results(perfect_preds(gts))))
    m, line = rp.evaluate_results_file(str(path), gts, NAMES)
    assert m["coco"]["mask"]["AP"] == pytest.approx(1.0) and "mask AP 1.000" in line
    m, line = rp.evaluate_results_file(str(path), gts, NAMES, out_dir=str(tmp_path / "r"))
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["meta"]["results"] == \
        str(path)


# ---------------------------------------------------------------- training curves

def write_csv(path, rows, columns):
    with open(path, "w") as f:
        f.write(",".join(columns) + "\n")
        for r in rows:
            f.write(",".join(str(v) for v in r) + "\n")


LOSSES = ["loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
          "mrcnn_mask_loss"]


def test_loss_curves(tmp_path):
    columns = ["epoch"] + LOSSES + ["val_" + c for c in LOSSES] + ["lr", "seconds"]
    rows = [[e] + [2.0 / e + k for k in range(6)] + [2.2 / e + k for k in range(6)] +
            [0.001, 3600] for e in (1, 2, 3)]
    write_csv(tmp_path / "losses.csv", rows, columns)
    png = tmp_path / "out" / "curves.png"
    assert rp.plot_loss_curves(str(tmp_path / "losses.csv"), str(png)) == str(png)
    assert png_size(png) == rp.PNG_SIZES["curves.png"]
    # one epoch, no validation columns
    write_csv(tmp_path / "one.csv", [[1] + [1.5] * 6 + [0.001, 10]],
              ["epoch"] + LOSSES + ["lr", "seconds"])
    rp.plot_loss_curves(str(tmp_path / "one.csv"), str(png))
    assert png_size(png) == rp.PNG_SIZES["curves.png"]
    assert sorted(os.listdir(png.parent)) == ["curves.png"]
    write_csv(tmp_path / "empty.csv", [], ["epoch"] + LOSSES)
    with pytest.raises(UserError, match="no epoch"):
        rp.plot_loss_curves(str(tmp_path / "empty.csv"), str(png))
    with pytest.raises(UserError, match="not found"):
        rp.plot_loss_curves(str(tmp_path / "absent.csv"), str(png))


def test_no_tensorflow_import():
    code = ("import sys; import wbc.evaluate, wbc.report; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
