"""wbc.figures (overlays, label images, PNG writes) and mrcnn.visualize (matplotlib plots)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wbc import figures

NAMES = ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _scene(h=400, w=500):
    """A mid-grey image with three separate discs of three classes."""
    image = np.full((h, w, 3), 128, np.uint8)
    image[::7] = 120                       # some texture, so "unchanged" means something
    discs = [(100, 100, 40), (220, 300, 50), (320, 120, 35)]
    masks = np.dstack([_disc((h, w), *d) for d in discs])
    class_ids = np.array([5, 3, 2])
    scores = np.array([0.97, 0.85, 0.51])
    return image, masks, class_ids, scores


def _colour_mask(img, rgb):
    return np.all(img == np.array(rgb, np.uint8), axis=-1)


def test_class_colours_cover_the_classes_and_differ():
    assert set(figures.CLASS_COLOURS) == set(NAMES[1:])
    colours = list(figures.CLASS_COLOURS.values())
    assert len(set(colours)) == len(colours)
    for c in colours:
        assert len(c) == 3 and all(0 <= v <= 255 for v in c)


def test_overlay_shape_dtype_and_input_untouched():
    image, masks, class_ids, scores = _scene()
    before = image.copy()
    out = figures.draw_overlay(image, masks, class_ids, scores, NAMES)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    assert not np.shares_memory(out, image)


def test_outline_has_class_colour_and_lies_on_mask_boundary():
    image, masks, class_ids, scores = _scene()
    out = figures.draw_overlay(image, masks, class_ids, scores, NAMES, outline_px=2)
    for i, cid in enumerate(class_ids):
        colour = figures.CLASS_COLOURS[NAMES[cid]]
        m = masks[:, :, i]
        boundary_band = m & ~ndimage.binary_erosion(m, iterations=3)
        interior = ndimage.binary_erosion(m, iterations=4)
        coloured = _colour_mask(out, colour)
        # The outline: most of the 2-px band inside the mask edge is exactly the colour ...
        edge = m & ~ndimage.binary_erosion(m)
        assert coloured[edge].mean() > 0.9
        # ... and coloured pixels within the instance sit on its boundary, not inside.
        assert coloured[interior].sum() == 0
        assert coloured[m].sum() <= coloured[boundary_band].sum()


def test_outline_thickness_scales_with_image_size():
    for size, lo, hi in ((250, 1, 1), (500, 2, 2), (1000, 3, 5)):
        image = np.zeros((size, size, 3), np.uint8)
        m = _disc((size, size), size // 2, size // 2, size // 4)
        out = figures.draw_overlay(image, m[:, :, None], [1], None, NAMES)
        row = out[size // 2]
        coloured = np.all(row == figures.CLASS_COLOURS["Basophil"], axis=-1)
        left = coloured[: size // 2]
        assert lo <= left.sum() <= hi, (size, left.sum())


def test_far_pixels_unchanged_and_fill_is_light():
    image, masks, class_ids, scores = _scene()
    out = figures.draw_overlay(image, masks, class_ids, scores, NAMES)
    near = ndimage.binary_dilation(masks.any(axis=2), iterations=10)
    for i in range(masks.shape[2]):                # where the label may go
        ys, xs = np.nonzero(masks[:, :, i])
        near[max(0, ys.min() - 40):ys.max() + 40, max(0, xs.min() - 10):xs.min() + 200] = True
    assert (~near).sum() > 0.4 * near.size
    assert np.array_equal(out[~near], image[~near])
    # Deep inside a cell: a light tint (alpha ~0.2) of the class colour.
    colour = np.array(figures.CLASS_COLOURS["Lymphocyte"], float)
    expected = 0.8 * image[220, 300].astype(float) + 0.2 * colour
    assert np.abs(out[220, 300].astype(float) - expected).max() <= 6


def test_label_box_drawn_just_above_the_instance():
    image, masks, class_ids, scores = _scene()
    out = figures.draw_overlay(image, masks, class_ids, scores, NAMES)
    for i, cid in enumerate(class_ids):
        colour = figures.CLASS_COLOURS[NAMES[cid]]
        ys, xs = np.nonzero(masks[:, :, i])
        y1, x1, x2 = ys.min(), xs.min(), xs.max()
        band = out[max(0, y1 - 30):y1, x1:x2 + 60]
        assert _colour_mask(band, colour).sum() > 100, NAMES[cid]
        # The text inside the box contrasts with it: black or white pixels are present.
        text = _colour_mask(band, (0, 0, 0)) | _colour_mask(band, (255, 255, 255))
        assert text.sum() > 10


def test_label_moved_inside_the_image_near_the_border():
    h, w = 300, 300
    image = np.full((h, w, 3), 128, np.uint8)
    m = _disc((h, w), 10, 290, 30)                  # touches the top and right edges
    out = figures.draw_overlay(image, m[:, :, None], [4], [0.9], NAMES)
    colour = figures.CLASS_COLOURS["Monocyte"]
    box = _colour_mask(out, colour) & ~m
    assert box.sum() > 100                        # the label box is there, inside the image


def test_zero_instances_returns_identical_copy():
    image, _, _, _ = _scene()
    for masks in (np.zeros(image.shape[:2] + (0,), bool), None):
        out = figures.draw_overlay(image, masks, np.zeros(0, int), np.zeros(0), NAMES)
        assert np.array_equal(out, image) and out is not image
        assert not np.shares_memory(out, image)


def test_grey_rgba_and_mask_dtypes():
    image, masks, class_ids, scores = _scene()
    reference = figures.draw_overlay(image, masks, class_ids, scores, NAMES)
    grey = image[:, :, 0]
    out = figures.draw_overlay(grey, masks.astype(np.uint8), class_ids, scores, NAMES)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, reference)          # the scene is grey already
    rgba = np.dstack([image, np.full(image.shape[:2], 77, np.uint8)])
    out = figures.draw_overlay(rgba, masks.astype(np.uint8) * 255, class_ids, scores, NAMES)
    assert np.array_equal(out, reference)


def test_overlay_without_scores_and_unknown_class():
    image, masks, _, _ = _scene()
    out = figures.draw_overlay(image, masks, [1, 9, 0], None, NAMES)
    assert out.shape == image.shape and not np.array_equal(out, image)


def test_label_image_values_and_overlap_order():
    h, w = 60, 80
    a = _disc((h, w), 30, 30, 15)
    b = _disc((h, w), 30, 45, 15)
    labels = figures.label_image(np.dstack([a, b]))
    assert labels.dtype == np.uint16 and labels.shape == (h, w)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.all(labels[b] == 2)                  # the later instance wins the overlap
    assert np.all(labels[a & ~b] == 1)
    assert np.all(labels[~a & ~b] == 0)
    assert figures.label_image(np.zeros((h, w, 0), bool)).max() == 0


@pytest.mark.parametrize("array", [
    np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8),
    np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8),
    np.random.default_rng(2).integers(0, 65536, (20, 30), dtype=np.uint16),
], ids=["rgb8", "grey8", "grey16"])
def test_save_png_round_trip(tmp_path, array):
    path = tmp_path / "new" / "sub" / "out.png"
    assert figures.save_png(array, str(path)) == str(path)
    with Image.open(path) as im:
        back = np.asarray(im)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    figures.save_png(array[::-1].copy(), str(path))       # overwrite in place
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), array[::-1])
    assert sorted(os.listdir(path.parent)) == ["out.png"]  # no temporary files left


def test_save_png_rejects_bad_arrays_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        figures.save_png(np.zeros((4, 4), np.float32), str(tmp_path / "x.png"))
    assert os.listdir(tmp_path) == []


def test_legend_strip():
    strip = figures.legend_strip(NAMES, 500)
    assert strip.dtype == np.uint8 and strip.ndim == 3 and strip.shape[1] == 500
    for name in NAMES[1:]:
        assert _colour_mask(strip, figures.CLASS_COLOURS[name]).sum() > 20


# ----------------------------------------------------------------------------- visualize


def test_visualize_in_a_fresh_process_needs_no_display(tmp_path):
    """display_instances and save_instances in a clean interpreter without DISPLAY."""
    code = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from mrcnn import visualize
import matplotlib
assert matplotlib.get_backend().lower() == "agg", matplotlib.get_backend()
assert "IPython" not in sys.modules and "tensorflow" not in sys.modules
h, w = 120, 160
yy, xx = np.mgrid[:h, :w]
masks = np.dstack([(yy - 40) ** 2 + (xx - 50) ** 2 < 400, (yy - 80) ** 2 + (xx - 110) ** 2 < 300])
boxes = np.array([[20, 30, 60, 70], [63, 93, 97, 127]])
image = np.full((h, w, 3), 200, np.uint8)
names = ["BG", "Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
ax = visualize.display_instances(image, boxes, masks, np.array([1, 5]), names,
                                 np.array([0.9, 0.8]), figsize=(4, 3))
ax.figure.savefig(sys.argv[2] + "/display.png", dpi=50)
visualize.save_instances(sys.argv[2] + "/saved.png", image, boxes, masks, np.array([1, 5]),
                         names, np.array([0.9, 0.8]), title="t")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                             "MPLBACKEND")}
    subprocess.run([sys.executable, "-c", code, ROOT, str(tmp_path)], env=env, check=True,
                   timeout=120)
    with Image.open(tmp_path / "display.png") as im:
        assert im.size == (200, 150)
    with Image.open(tmp_path / "saved.png") as im:
        assert im.size == (160, 120)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 0                         # something was drawn on the flat image


def test_visualize_helpers(tmp_path):
    from mrcnn import visualize

    colours = visualize.random_colors(5)
    assert len(colours) == 5 and all(len(c) == 3 and max(c) <= 1.0 for c in colours)
    image = np.zeros((10, 10, 3), np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    out = visualize.apply_mask(image.astype(np.float64), mask, (1.0, 0.0, 0.0), alpha=0.5)
    assert out[3, 3, 0] == pytest.approx(127.5) and out[0, 0, 0] == 0
    boxed = visualize.draw_box(np.zeros((20, 20, 3), np.uint8), (2, 3, 15, 16), (255, 0, 0))
    assert boxed[2, 5, 0] == 255 and boxed[8, 8, 0] == 0

    # Zero boxes are skipped; masks and captions handled; returns the Axes given.
    from matplotlib.figure import Figure
    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot()
    masks = np.zeros((10, 10, 2), bool)
    masks[2:5, 2:5, 0] = True
    res = visualize.display_instances(image, np.array([[2, 2, 5, 5], [0, 0, 0, 0]]), masks,
                                      np.array([1, 2]), NAMES, captions=["a", "b"], ax=ax)
    assert res is ax
    assert [t.get_text() for t in ax.texts] == ["a"]

    path = visualize.save_instances(str(tmp_path / "d" / "s.png"), image[:, :, 0],
                                    np.zeros((0, 4)), np.zeros((10, 10, 0), bool),
                                    np.zeros(0, int), NAMES, scale=3)
    with Image.open(path) as im:
        assert im.size == (30, 30)
    assert os.listdir(tmp_path / "d") == ["s.png"]
