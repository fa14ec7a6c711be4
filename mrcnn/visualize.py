"""Plotting helpers with Matterport's ``mrcnn.visualize`` API, on matplotlib.

    from mrcnn import visualize
    r = model.detect([image])[0]
    visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"],
                                class_names, r["scores"])
    visualize.save_instances("out.png", image, r["rois"], r["masks"], r["class_ids"],
                             class_names, r["scores"])

Shapes follow Matterport: image [H,W,3], boxes [N,4] as (y1, x1, y2, x2) in pixels,
masks [H,W,N], class_ids [N] indexing class_names, scores [N] or None.

Backend: if pyplot is not imported yet and MPLBACKEND is not set, this module selects the
non-interactive Agg backend, so nothing here ever needs a display. A backend that is
already active (pyplot imported, e.g. in Jupyter or an interactive session) is left
alone. ``plt.show()`` is only called when the active backend is interactive.
"""
import colorsys
import os
import random
import sys

import numpy as np
import matplotlib

if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches, patheffects  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.measure import find_contours  # noqa: E402

from mrcnn.durable import replacing  # noqa: E402

__all__ = ["random_colors", "apply_mask", "display_instances", "display_images",
           "display_top_masks", "draw_box", "save_instances"]

_NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def _interactive_backend():
    """True when plt.show() would display something (a GUI or inline backend)."""
    backend = str(matplotlib.get_backend()).lower()
    if backend.startswith("module://"):
        return "inline" in backend or "ipympl" in backend or "widget" in backend
    return backend not in _NON_INTERACTIVE


def _maybe_show():
    if _interactive_backend():
        plt.show()


def _to_rgb(image):
    """[H,W], [H,W,1], [H,W,3] or [H,W,4] -> [H,W,3] (same dtype)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[:, :, :3]


def _mask_bool(mask):
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        return mask >= 0.5
    return mask != 0


def random_colors(N, bright=True):
    """N visually distinct colours: evenly spaced hues in HSV, shuffled.

    Returns a list of N (r, g, b) tuples with values in 0..1 (brightness 1.0 if bright,
    else 0.7). Uses the ``random`` module's global state for the shuffle, as Matterport does.
    """
    brightness = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / float(max(N, 1)), 1.0, brightness) for i in range(N)]
    random.shuffle(colors)
    return colors


def apply_mask(image, mask, color, alpha=0.5):
    """Blend a colour into an image where a mask is set, in place.

    image: [H,W,3] numeric array (modified and returned).
    mask: [H,W] (bool, 0/1 or float >= 0.5 is inside).
    color: (r, g, b) with values in 0..1. alpha: opacity of the colour.
    """
    inside = _mask_bool(mask)
    for c in range(3):
        channel = image[:, :, c]
        channel[inside] = channel[inside] * (1 - alpha) + alpha * color[c] * 255
    return image


def display_instances(image, boxes, masks, class_ids, class_names,
                      scores=None, title="",
                      figsize=(16, 16), ax=None,
                      show_mask=True, show_bbox=True,
                      colors=None, captions=None):
    """Draw detections on a matplotlib Axes.

    image: [H,W,3] (grey [H,W] is accepted too).
    boxes: [N,4] (y1, x1, y2, x2) in image pixels; all-zero rows are skipped.
    masks: [H,W,N] instance masks.
    class_ids: [N] ints indexing class_names. scores: [N] confidences, or None.
    title: axes title. figsize: figure size when ax is None.
    ax: an Axes to draw on; if None a new figure is made and plt.show() is called, but
        only when the backend is interactive.
    show_mask / show_bbox: draw the translucent masks (alpha 0.5) / dashed boxes.
    colors: one (r, g, b) 0..1 per instance; default random_colors(N).
    captions: one string per instance instead of the default "name score".
    Returns the Axes.
    """
    boxes = np.asarray(boxes).reshape(-1, 4) if boxes is not None else np.zeros((0, 4))
    N = boxes.shape[0]
    image = _to_rgb(image)
    if masks is None:
        masks = np.zeros(image.shape[:2] + (N,), bool)
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[:, :, None]
    class_ids = np.asarray(class_ids).reshape(-1)
    if not N:
        print("\n*** No instances to display *** \n")
    else:
        assert boxes.shape[0] == masks.shape[-1] == class_ids.shape[0], \
            "boxes, masks and class_ids must all have N entries"

    auto_show = False
    if ax is None:
        _, ax = plt.subplots(1, figsize=figsize)
        auto_show = True

    if colors is None or len(colors) == 0:
        colors = random_colors(N)

    height, width = image.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)

    masked_image = image.astype(np.uint32)          # a copy; wide enough to blend in
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for i in range(N):
        color = colors[i]
        if not np.any(boxes[i]):
            continue                      # skipped in crops/padding: no detection here
        y1, x1, y2, x2 = (float(v) for v in boxes[i])
        if show_bbox:
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2,
                                           alpha=0.7, linestyle="dashed",
                                           edgecolor=color, facecolor="none"))
        if captions is not None and len(captions):
            caption = captions[i]
        else:
            class_id = int(class_ids[i])
            score = scores[i] if scores is not None else None
            label = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
            caption = "{} {:.3f}".format(label, score) if score is not None else label
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none",
                path_effects=outline)

        mask = _mask_bool(masks[:, :, i])
        if show_mask:
            masked_image = apply_mask(masked_image, mask, color)
        # Pad so that contours of masks touching the image edge are closed.
        padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
        padded[1:-1, 1:-1] = mask
        for verts in find_contours(padded, 0.5):
            verts = np.fliplr(verts) - 1          # (row, col) -> (x, y), undo the padding
            ax.add_patch(Polygon(verts, facecolor="none", edgecolor=color))
    ax.imshow(np.clip(masked_image, 0, 255).astype(np.uint8))
    if auto_show:
        _maybe_show()
    return ax


def display_images(images, titles=None, cols=4, cmap=None, norm=None, interpolation=None):
    """Show a grid of images, with optional titles.

    images: list of [H,W] or [H,W,3] arrays. titles: list of strings (same length).
    cols: images per row. cmap, norm, interpolation: passed to imshow.
    Returns the matplotlib Figure (shown only when the backend is interactive).
    """
    titles = titles if titles is not None else [""] * len(images)
    rows = max(1, int(np.ceil(len(images) / float(cols))))
    fig = plt.figure(figsize=(14, 14 * rows // cols))
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        ax = fig.add_subplot(rows, cols, i)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        ax.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm,
                  interpolation=interpolation)
    _maybe_show()
    return fig


def display_top_masks(image, mask, class_ids, class_names, limit=4):
    """Show the image and, per class, the union of its masks, for the `limit` classes
    covering the most area.

    image: [H,W,3]. mask: [H,W,N]. class_ids: [N]. class_names: list of names.
    Returns the Figure from display_images.
    """
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids).reshape(-1)
    to_display = [image]
    titles = ["H x W={}x{}".format(image.shape[0], image.shape[1])]
    unique_class_ids = np.unique(class_ids)
    areas = [np.sum(mask[:, :, np.where(class_ids == i)[0]]) for i in unique_class_ids]
    top_ids = [cid for cid, area in sorted(zip(unique_class_ids, areas),
                                           key=lambda r: r[1], reverse=True) if area > 0]
    for i in range(limit):
        class_id = top_ids[i] if i < len(top_ids) else -1
        m = mask[:, :, np.where(class_ids == class_id)[0]]
        # Each instance numbered 1..k so that instances of one class are told apart.
        m = np.sum(m * np.arange(1, m.shape[-1] + 1), -1)
        to_display.append(m)
        titles.append(class_names[class_id] if class_id != -1 else "-")
    return display_images(to_display, titles=titles, cols=limit + 1, cmap="Blues_r")


def draw_box(image, box, color):
    """Draw a 2-pixel-wide box on an image, in place.

    image: [H,W,3] array (modified and returned). box: (y1, x1, y2, x2).
    color: a value per channel in the image's own range, e.g. (255, 0, 0) for uint8.
    """
    y1, x1, y2, x2 = (int(v) for v in box)
    image[y1:y1 + 2, x1:x2] = color
    image[y2:y2 + 2, x1:x2] = color
    image[y1:y2, x1:x1 + 2] = color
    image[y1:y2, x2:x2 + 2] = color
    return image


def save_instances(path, image, boxes, masks, class_ids, class_names, scores=None,
                   scale=1.0, **kw):
    """Render display_instances to a PNG file, without pyplot or a display.

    path: output file (folder created if needed; written atomically).
    image, boxes [N,4] (y1,x1,y2,x2), masks [H,W,N], class_ids [N], class_names, scores [N]:
        as for display_instances. Other keyword arguments (show_mask, show_bbox, colors,
        captions, title) are passed on; a title is written inside the picture.
    scale: the PNG is round(W*scale) x round(H*scale) pixels (scale=1: the image's size).
    Returns path.
    """
    image = _to_rgb(image)
    height, width = image.shape[:2]
    out_w, out_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
    dpi = 100.0
    kw.pop("ax", None)
    kw.pop("figsize", None)
    title = kw.pop("title", "")

    fig = Figure(figsize=(out_w / dpi, out_h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    display_instances(image, boxes, masks, class_ids, class_names, scores=scores,
                      ax=ax, title="", **kw)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    if title:
        ax.text(0.01, 0.99, title, transform=ax.transAxes, va="top", ha="left", color="w",
                size=12, path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    rgb = rgba[:, :, :3]
    if rgb.shape[:2] != (out_h, out_w):   # guard against size rounding in the renderer
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((out_w, out_h)))

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path, "wb") as f:
        Image.fromarray(np.ascontiguousarray(rgb)).save(f, format="PNG")
    return path
