"""Tests of the synthetic blood-smear generator (wbc/synth.py): layout, masks, determinism,
stratified split, refusal to overwrite, class-specific looks and speed."""
import os
import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wbc import synth
from wbc.errors import UserError
from wbc.synth import CLASSES, draw_smear, generate

SMALL = dict(images=10, size=256, seed=3, val_fraction=0.2, progress=False)


def _files(root):
    out = []
    for folder, _, names in os.walk(root):
        out.extend(os.path.relpath(os.path.join(folder, n), root) for n in names)
    return sorted(out)


def _read_all(root):
    return {p: open(os.path.join(root, p), "rb").read() for p in _files(root)}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "data")
    counts = generate(root, **SMALL)
    return root, counts


# ----------------------------------------------------------------------------- layout


def test_layout_and_pairing(small_run):
    root, counts = small_run
    files = _files(root)
    assert len(files) == 2 * SMALL["images"]
    assert not [f for f in files if os.path.basename(f).startswith(".")], "temporary files left"
    images = [f for f in files if f.split(os.sep)[1] == "image"]
    masks = [f for f in files if f.split(os.sep)[1] == "mask"]
    assert len(images) == len(masks) == SMALL["images"]
    stems = set()
    for f in images:
        subset, kind, cls, name = f.split(os.sep)
        assert subset in ("train", "val") and cls in CLASSES
        assert name.startswith("synth_") and name.endswith(".png")
        assert os.path.join(subset, "mask", cls, name) in masks   # same stem, same place
        stems.add(name)
        im = Image.open(os.path.join(root, f))
        m = Image.open(os.path.join(root, subset, "mask", cls, name))
        assert im.mode == "RGB" and im.size == (256, 256)
        assert m.mode == "L" and m.size == (256, 256)
    assert len(stems) == SMALL["images"]                           # stems are unique
    # the returned counts match the files on disk
    for subset in ("train", "val"):
        for cls in CLASSES:
            on_disk = len([f for f in images if f.startswith(os.path.join(subset, "image", cls))])
            assert counts[subset][cls] == on_disk
    assert counts["seconds"] > 0


def test_classes_balanced_and_split_stratified(small_run):
    _, counts = small_run
    per_class = {c: counts["train"][c] + counts["val"][c] for c in CLASSES}
    assert set(per_class.values()) == {2}                          # 10 images, 5 classes
    assert sum(counts["val"].values()) == 2                        # round(10 * 0.2)
    assert all(counts["train"][c] >= 1 for c in CLASSES)


@pytest.mark.parametrize("images,fraction", [(5, 0.2), (7, 0.5), (50, 0.2), (103, 0.3), (12, 0.0)])
def test_split_plan(images, fraction):
    plan = synth._plan(images, 11, fraction)
    assert [p[0] for p in plan] == list(range(images))
    n = {c: sum(1 for p in plan if p[2] == c) for c in CLASSES}
    assert max(n.values()) - min(n.values()) <= 1                  # round-robin balance
    val = {c: sum(1 for p in plan if p[2] == c and p[3] == "val") for c in CLASSES}
    assert sum(val.values()) == min(round(images * fraction), images - 5)
    for c in CLASSES:
        assert n[c] - val[c] >= 1                                  # a train image per class
        assert abs(val[c] - n[c] * fraction) < 1.0 + 1e-9          # each class gets its share


def test_png_encoder_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(37, 53, 3), (20, 31)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        import io
        back = np.asarray(Image.open(io.BytesIO(synth._png_bytes(a))))
        assert back.shape == a.shape and (back == a).all()


# ----------------------------------------------------------------------------- masks


def test_mask_values_and_components(small_run):
    root, _ = small_run
    for f in _files(root):
        if f.split(os.sep)[1] != "mask":
            continue
        m = np.asarray(Image.open(os.path.join(root, f)))
        assert set(np.unique(m).tolist()) <= {0, 128, 255}
        assert (m == 255).any() and (m == 128).any()
        labels, n = ndimage.label(m > 0)
        assert 1 <= n <= 3
        sizes = np.bincount(labels.ravel())[1:]
        assert sizes.min() >= 300, (f, sizes)
        # white cells do not touch: at least 4 px between any two of them
        for i in range(1, n + 1):
            dist = ndimage.distance_transform_edt(labels != i)
            others = (labels > 0) & (labels != i)
            if others.any():
                assert dist[others].min() >= 4.0, f


@pytest.mark.parametrize("cls", CLASSES)
def test_draw_smear_contract(cls):
    for n_cells in (1, 2, 3):
        img, mask = draw_smear(np.random.default_rng([n_cells, 5]), 192, cls, n_cells)
        assert img.shape == (192, 192, 3) and img.dtype == np.uint8
        assert mask.shape == (192, 192) and mask.dtype == np.uint8
        assert ndimage.label(mask > 0)[1] == n_cells
        # the nucleus lies inside the cell, with cytoplasm around it
        nucleus = mask == 255
        assert not (ndimage.binary_dilation(nucleus) & (mask == 0)).any()


def test_crop_single_cell_keeps_the_whole_cell_at_the_asked_fill():
    rng = np.random.default_rng(11)
    for trial in range(20):
        image, mask = draw_smear(rng, 256, CLASSES[trial % 5], 1)
        crop_image, crop_mask = synth.crop_single_cell(rng, image, mask)
        side = crop_mask.shape[0]
        assert crop_mask.shape == (side, side) and crop_image.shape == (side, side, 3)
        assert np.count_nonzero(crop_mask) == np.count_nonzero(mask)      # nothing cut off
        ys, xs = np.nonzero(crop_mask)
        cell = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert synth.CELL_FILL[0] - 0.01 <= cell / side <= synth.CELL_FILL[1] + 0.01


def test_single_cell_data_set(tmp_path):
    root = str(tmp_path / "cells")
    counts = generate(root, images=10, size=96, seed=2, progress=False, single_cells=True)
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 10
    sides = set()
    for f in _files(root):
        if f.split(os.sep)[1] == "mask":
            m = np.asarray(Image.open(os.path.join(root, f)))
            image = Image.open(os.path.join(root, f.replace(os.sep + "mask" + os.sep,
                                                            os.sep + "image" + os.sep)))
            assert image.size == m.shape[::-1] and m.shape[0] == m.shape[1]
            assert ndimage.label(m > 0)[1] == 1
            sides.add(m.shape[0])
    assert len(sides) > 1                       # cells of several sizes, crops of several sides


def test_draw_smear_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        draw_smear(rng, 256, "Platelet", 1)
    with pytest.raises(ValueError):
        draw_smear(rng, 256, "Monocyte", 4)
    with pytest.raises(ValueError):
        draw_smear(rng, 16, "Monocyte", 1)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(small_run, tmp_path):
    root, _ = small_run
    again = str(tmp_path / "again")
    generate(again, **SMALL)
    assert _read_all(again) == _read_all(root)

    other = str(tmp_path / "other")
    generate(other, **dict(SMALL, seed=4))
    a, b = _read_all(root), _read_all(other)
    common = set(a) & set(b)
    images_a = sorted(a[p] for p in a if os.sep + "image" + os.sep in p)
    images_b = sorted(b[p] for p in b if os.sep + "image" + os.sep in p)
    assert images_a != images_b
    assert all(a[p] != b[p] for p in common if os.sep + "image" + os.sep in p)


def test_draw_smear_deterministic():
    a = draw_smear(np.random.default_rng(9), 128, "Eosinophil", 2)
    b = draw_smear(np.random.default_rng(9), 128, "Eosinophil", 2)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


# ----------------------------------------------------------------------------- refusal


def test_refuses_to_overwrite(small_run):
    root, _ = small_run
    before = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _files(root)}
    with pytest.raises(UserError) as err:
        generate(root, **SMALL)
    assert "\n" not in str(err.value) and "exist" in str(err.value)
    after = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _files(root)}
    assert after == before


def test_refuses_if_one_target_exists_and_writes_nothing(tmp_path):
    root = tmp_path / "data"
    plan = synth._plan(6, 0, 0.2)
    _, stem, cls, subset = plan[4]
    victim = root / subset / "mask" / cls / (stem + ".png")
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"user data")
    with pytest.raises(UserError):
        generate(str(root), images=6, size=128, seed=0, progress=False)
    assert victim.read_bytes() == b"user data"
    assert _files(str(root)) == [os.path.relpath(str(victim), str(root))]


def test_refuses_a_file_as_out_dir(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    with pytest.raises(UserError):
        generate(str(target), images=2, size=128, progress=False)
    assert target.read_text() == "keep me"


def test_adds_to_a_folder_without_clashes(tmp_path):
    root = tmp_path / "data"
    mine = root / "train" / "image" / "Monocyte" / "real_001.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"real")
    (root / "README.md").write_text("mine")
    counts = generate(str(root), images=5, size=128, seed=1, val_fraction=0.0, progress=False)
    assert sum(counts["train"].values()) == 5
    assert mine.read_bytes() == b"real" and (root / "README.md").read_text() == "mine"
    assert len(_files(str(root))) == 2 + 10


@pytest.mark.parametrize("kwargs", [dict(images=0), dict(size=20), dict(seed=-1),
                                    dict(val_fraction=1.0), dict(val_fraction="x")])
def test_rejects_bad_arguments(tmp_path, kwargs):
    args = dict(images=2, size=128, progress=False)
    args.update(kwargs)
    with pytest.raises(UserError):
        generate(str(tmp_path / "out"), **args)
    assert not (tmp_path / "out").exists()


def test_progress_bar_on_stderr(tmp_path, capsys):
    generate(str(tmp_path / "p"), images=2, size=96, progress=True)
    captured = capsys.readouterr()
    assert "synth" in captured.err and captured.out == ""


# ----------------------------------------------------------------------------- look by class


@pytest.fixture(scope="module")
def class_stats():
    """Per class, over several single-cell pictures: colours of nucleus and cytoplasm, nucleus
    fraction of the cell, cell area."""
    stats = {}
    for k, cls in enumerate(CLASSES):
        rows = []
        for j in range(6):
            img, mask = draw_smear(np.random.default_rng([k, j, 77]), 256, cls, 1)
            img = img.astype(float)
            nuc, cyto, cell = mask == 255, mask == 128, mask > 0
            rows.append(dict(
                nuc_lum=img[nuc].mean(),
                cell_lum=img[cell].mean(),
                cyto=img[cyto].mean(axis=0),
                nuc_frac=nuc.sum() / cell.sum(),
                area=cell.sum(),
            ))
        stats[cls] = {key: np.mean([r[key] for r in rows], axis=0) for key in rows[0]}
    return stats


def test_nucleus_darker_than_cytoplasm(class_stats):
    for cls, s in class_stats.items():
        assert s["nuc_lum"] < s["cyto"].mean() - 20, cls


def test_basophil_granules_darken_the_whole_cell(class_stats):
    baso = class_stats["Basophil"]
    for cls in CLASSES:
        if cls != "Basophil":
            other = class_stats[cls]["cyto"]
            assert baso["cyto"].mean() < other.mean() - 15, cls       # darker
            assert baso["cyto"].max() < other.max() - 30, cls          # absorbs every colour
            if cls != "Lymphocyte":      # a lymphocyte is mostly its dense nucleus
                assert baso["cell_lum"] < class_stats[cls]["cell_lum"] - 15, cls


def test_monocyte_nucleus_lighter_than_lymphocyte_and_neutrophil(class_stats):
    mono = class_stats["Monocyte"]["nuc_lum"]
    assert mono > class_stats["Lymphocyte"]["nuc_lum"] + 10
    assert mono > class_stats["Neutrophil"]["nuc_lum"] + 10


def test_eosinophil_cytoplasm_redder_than_neutrophil(class_stats):
    def redness(rgb):
        return rgb[0] - (rgb[1] + rgb[2]) / 2

    eos = redness(class_stats["Eosinophil"]["cyto"])
    assert eos > redness(class_stats["Neutrophil"]["cyto"]) + 25
    assert eos > redness(class_stats["Monocyte"]["cyto"]) + 25


def test_lymphocyte_cytoplasm_blue(class_stats):
    def blueness(rgb):
        return rgb[2] - rgb[0]

    lymph = blueness(class_stats["Lymphocyte"]["cyto"])
    assert lymph > 10
    assert lymph > blueness(class_stats["Neutrophil"]["cyto"]) + 15
    assert lymph > blueness(class_stats["Eosinophil"]["cyto"]) + 15


def test_nucleus_fraction_and_size_by_class(class_stats):
    s = class_stats
    assert s["Lymphocyte"]["nuc_frac"] > 0.5
    assert s["Lymphocyte"]["nuc_frac"] > s["Monocyte"]["nuc_frac"] + 0.1
    assert s["Monocyte"]["nuc_frac"] > s["Neutrophil"]["nuc_frac"]
    assert s["Monocyte"]["area"] > max(s[c]["area"] for c in CLASSES if c != "Monocyte")
    assert s["Lymphocyte"]["area"] < min(s[c]["area"] for c in CLASSES if c != "Lymphocyte")


# ----------------------------------------------------------------------------- speed


def test_speed_lenient(tmp_path):
    """The target is >= 20 images/s at 512 px on one core; CI shares the CPU, so ask 5."""
    generate(str(tmp_path / "warm"), images=1, size=512, progress=False)
    n = 15
    t0 = time.perf_counter()
    generate(str(tmp_path / "speed"), images=n, size=512, seed=5, progress=False)
    rate = n / (time.perf_counter() - t0)
    assert rate >= 5.0, "%.1f images/s" % rate
