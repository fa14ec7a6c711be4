"""Pictures of detections: class-coloured outlines and labels, label images, safe PNG writes.

Used by ``WBC.py detect`` / ``demo`` to show what the network found. Everything here is
numpy + Pillow (no matplotlib figures, no TensorFlow), so it is fast and needs no display.

Public API:

- :data:`CLASS_COLOURS`: one fixed RGB colour per class name, from the Okabe-Ito palette
  (distinguishable with the common forms of colour blindness, and bright enough to stand
  out against pink/purple stained smears).
- :func:`draw_overlay` (image, masks, class_ids, scores, class_names, outline_px=None):
  the image with each cell outlined and lightly filled in its class colour, and a
  "Neutrophil 0.97" label just above it.
- :func:`label_image` (masks): a uint16 instance label image (0 background, i+1 cell i).
- :func:`save_png` (array, path): atomic PNG write of uint8 RGB/RGBA/grey or uint16 grey.
- :func:`legend_strip` (class_names, width): a small colour key, to stack under an overlay.

Conventions follow Matterport's ``detect()`` output: ``masks`` is [H, W, N] (bool or any
integer/float type; non-zero, or >= 0.5 for floats, is "inside"), ``class_ids`` [N] index
``class_names`` (which usually starts with "BG"), ``scores`` [N] in 0..1 or None.
"""
import functools
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from mrcnn.durable import replacing

__all__ = ["CLASS_COLOURS", "draw_overlay", "label_image", "save_png", "legend_strip"]

# Okabe & Ito (2008), "Color Universal Design". Basophils are dark purple, so they get the
# palette's yellow; blue and sky blue go to the cells with the palest cytoplasm.
CLASS_COLOURS = {
    "Basophil": (240, 228, 66),      # yellow
    "Eosinophil": (213, 94, 0),      # vermillion
    "Lymphocyte": (86, 180, 233),    # sky blue
    "Monocyte": (0, 158, 115),       # bluish green
    "Neutrophil": (0, 114, 178),     # blue
}
# For class names not in CLASS_COLOURS (indexed by class id).
_FALLBACK_COLOURS = [
    (230, 159, 0),                   # orange
    (204, 121, 167),                 # reddish purple
    (0, 114, 178), (213, 94, 0), (0, 158, 115), (86, 180, 233), (240, 228, 66),
]

FILL_ALPHA = 0.2
HALO_KEEP = 0.55                      # brightness kept under the dark halo
_REFERENCE_SIDE = 500.0               # sizes below are quoted for a ~500x500 image
_OUTLINE_AT_REFERENCE = 2.0           # px
_FONT_AT_REFERENCE = 12.0             # px
_MIN_FONT = 9


# ----------------------------------------------------------------------------- helpers


def _scale(height, width):
    return float(np.sqrt(float(height) * float(width))) / _REFERENCE_SIDE


def _as_rgb_uint8(image):
    """Any image (H,W), (H,W,1), (H,W,3) or (H,W,4) -> a new uint8 RGB [H,W,3] array."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError("image must be [H,W], [H,W,3] or [H,W,4], got shape %s" % (img.shape,))
    img = img[:, :, :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img).copy()
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.floating):
        finite = img[np.isfinite(img)]
        if finite.size and finite.max() <= 1.0:
            img = img * 255.0
        img = np.nan_to_num(img, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if img.dtype == np.uint16 and img.max(initial=0) > 255:
        return (img >> 8).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _as_bool_masks(masks, height, width):
    """masks [H,W,N] (or [H,W] for one instance, or None) -> bool [H,W,N]."""
    if masks is None:
        return np.zeros((height, width, 0), bool)
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3 or m.shape[:2] != (height, width):
        raise ValueError("masks must be [H,W,N] with H,W = %d,%d, got shape %s"
                         % (height, width, m.shape))
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.floating):
        return m >= 0.5
    return m != 0


def _class_name(class_id, class_names):
    cid = int(class_id)
    if class_names is not None and 0 <= cid < len(class_names):
        return str(class_names[cid])
    return "class %d" % cid


def _class_colour(name, class_id):
    colour = CLASS_COLOURS.get(name)
    if colour is None:
        colour = _FALLBACK_COLOURS[int(class_id) % len(_FALLBACK_COLOURS)]
    return colour


def _luminance(rgb):
    """WCAG relative luminance of an sRGB colour (0..255 ints)."""
    c = np.asarray(rgb, float) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


def _text_colour(background):
    """Black or white, whichever contrasts more with the background colour."""
    lum = _luminance(background)
    on_black = (lum + 0.05) / 0.05
    on_white = 1.05 / (lum + 0.05)
    return (0, 0, 0) if on_black >= on_white else (255, 255, 255)


def _font_files():
    """Candidate TrueType files: matplotlib's bundled DejaVu Sans (bold, then regular)."""
    files = []
    try:
        import matplotlib
        ttf = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
        files += [os.path.join(ttf, "DejaVuSans-Bold.ttf"), os.path.join(ttf, "DejaVuSans.ttf")]
        from matplotlib import font_manager
        try:
            files.append(font_manager.findfont(
                font_manager.FontProperties(family="DejaVu Sans", weight="bold"),
                fallback_to_default=False))
        except Exception:  # noqa: BLE001 - no such font on this system
            pass
    except Exception:  # noqa: BLE001 - matplotlib missing or broken: Pillow's default font
        pass
    files += ["DejaVuSans-Bold.ttf", "DejaVuSans.ttf"]   # Pillow also searches system paths
    return files


@functools.lru_cache(maxsize=16)
def _font(size):
    for path in _font_files():
        try:
            return ImageFont.truetype(path, size)
        except (OSError, ValueError):
            continue
    try:
        return ImageFont.load_default(size=size)        # Pillow >= 10.1 with FreeType
    except TypeError:
        return ImageFont.load_default()


def _font_size(height, width):
    return max(_MIN_FONT, int(round(_FONT_AT_REFERENCE * _scale(height, width))))


def _text_metrics(font, text):
    """(width, height, x_offset, y_offset) of the text's ink box when drawn at (0, 0)."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, _, right, _ = probe.textbbox((0, 0), text, font=font)
    _, top, _, bottom = probe.textbbox((0, 0), "Ag0.9", font=font)   # same height for all
    return right - left, bottom - top, left, top


def _label_box(font, text):
    """Size of a filled label box and where the text goes inside it."""
    tw, th, tx, ty = _text_metrics(font, text)
    pad_x = max(2, int(round(th * 0.3)))
    pad_y = max(1, int(round(th * 0.2)))
    return tw + 2 * pad_x, th + 2 * pad_y, pad_x - tx, pad_y - ty


def _overlaps(rect, others):
    x0, y0, x1, y1 = rect
    for a0, b0, a1, b1 in others:
        if x0 < a1 and a0 < x1 and y0 < b1 and b0 < y1:
            return True
    return False


def _place_label(box, size, image_hw, placed):
    """Top-left corner of a label of size (w, h) for an instance box (y1, x1, y2, x2).

    Tries just above the box, then just below it, then inside its top edge; prefers a spot
    inside the image that does not cover an earlier label.
    """
    y1, x1, y2, x2 = box
    w, h = size
    H, W = image_hw
    x = int(min(max(x1, 0), max(W - w, 0)))
    candidates = [y1 - h, y2, y1]
    inside = [y for y in candidates if 0 <= y and y + h <= H]
    for y in inside:
        if not _overlaps((x, y, x + w, y + h), placed):
            return x, y
    if inside:
        return x, inside[0]
    return x, int(min(max(y1 - h, 0), max(H - h, 0)))


def _inner_outline(mask_crop, thickness):
    """Pixels of the mask within `thickness` px of its edge (image borders count as edge)."""
    padded = np.pad(mask_crop, 1)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return mask_crop & (dist <= thickness)


def _outer_ring(mask_crop, width):
    """Pixels outside the mask within `width` px of it, on a crop padded by `width`."""
    padded = np.pad(mask_crop, width)
    dist = ndimage.distance_transform_edt(~padded)
    return (dist > 0) & (dist <= width)


# ----------------------------------------------------------------------------- public API


def draw_overlay(image, masks, class_ids, scores, class_names, outline_px=None):
    """Draw detections over an image.

    image: [H,W] grey, [H,W,3] RGB or [H,W,4] RGBA (alpha dropped); uint8 preferred.
    masks: [H,W,N] instance masks (bool or numeric; non-zero is inside), or None for none.
    class_ids: [N] ints indexing ``class_names`` (e.g. ["BG", "Basophil", ...]).
    scores: [N] floats in 0..1, or None to label with the class name only.
    outline_px: outline thickness; None scales it with the image (2 px at ~500x500),
        0 draws no outline.
    Returns a new uint8 RGB [H,W,3] image. Each cell gets a light fill (alpha 0.2) and an
    outline along the inside of its mask edge in its class colour, and a label box
    ("Neutrophil 0.97") of that colour just above its bounding box, kept inside the image.
    Later instances are drawn over earlier ones.
    """
    out = _as_rgb_uint8(image)
    H, W = out.shape[:2]
    m = _as_bool_masks(masks, H, W)
    n = m.shape[2]
    if n == 0:
        return out
    class_ids = np.asarray(class_ids).reshape(-1)
    if class_ids.shape[0] != n:
        raise ValueError("got %d masks but %d class ids" % (n, class_ids.shape[0]))
    if scores is not None:
        scores = np.asarray(scores, float).reshape(-1)
        if scores.shape[0] != n:
            raise ValueError("got %d masks but %d scores" % (n, scores.shape[0]))
    if outline_px is None:
        outline_px = max(1, int(round(_OUTLINE_AT_REFERENCE * _scale(H, W))))
    outline_px = int(outline_px)

    # Bounding boxes (y1, x1, y2, x2) with y2/x2 exclusive; empty masks are skipped.
    boxes = []
    rows_any = m.any(axis=1)           # [H, N]... computed once for all instances
    cols_any = m.any(axis=0)           # [W, N]
    for i in range(n):
        ys = np.flatnonzero(rows_any[:, i])
        xs = np.flatnonzero(cols_any[:, i])
        boxes.append(None if ys.size == 0 else (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1))

    names = [_class_name(c, class_names) for c in class_ids]
    colours = [np.array(_class_colour(nm, c), np.float32) for nm, c in zip(names, class_ids)]

    # 1. Light fills and a faint dark halo just outside each outline (for contrast on pale
    # backgrounds), 2. outlines (after all fills so no fill tints another cell's outline).
    work = out.astype(np.float32)
    outlines = []
    halo = max(1, outline_px // 2)
    for i, box in enumerate(boxes):
        if box is None:
            outlines.append(None)
            continue
        y1, x1, y2, x2 = box
        crop = m[y1:y2, x1:x2, i]
        region = work[y1:y2, x1:x2]
        region[crop] = region[crop] * (1.0 - FILL_ALPHA) + colours[i] * FILL_ALPHA
        if outline_px > 0:
            outlines.append(_inner_outline(crop, outline_px))
            ring = _outer_ring(crop, halo)
            # Clip the padded ring to the image.
            ry1, rx1 = y1 - halo, x1 - halo
            ring = ring[max(0, -ry1):, max(0, -rx1):]
            ry1, rx1 = max(ry1, 0), max(rx1, 0)
            ring = ring[:H - ry1, :W - rx1]
            target = work[ry1:ry1 + ring.shape[0], rx1:rx1 + ring.shape[1]]
            target[ring] *= HALO_KEEP
        else:
            outlines.append(None)
    np.rint(work, out=work)
    out = work.astype(np.uint8)
    for i, box in enumerate(boxes):
        if box is None or outlines[i] is None:
            continue
        y1, x1, y2, x2 = box
        out[y1:y2, x1:x2][outlines[i]] = colours[i].astype(np.uint8)

    # 3. Labels, with Pillow.
    font = _font(_font_size(H, W))
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    placed = []
    for i, box in enumerate(boxes):
        if box is None:
            continue
        text = names[i] if scores is None else "%s %.2f" % (names[i], scores[i])
        w, h, tx, ty = _label_box(font, text)
        x, y = _place_label(box, (w, h), (H, W), placed)
        placed.append((x, y, x + w, y + h))
        fill = tuple(int(v) for v in colours[i])
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=fill)
        draw.text((x + tx, y + ty), text, font=font, fill=_text_colour(fill))
    return np.asarray(pil, dtype=np.uint8).copy()


def label_image(masks):
    """Instance label image from masks [H,W,N] (or [H,W] for one instance).

    Returns uint16 [H,W]: 0 background, i+1 where instance i is (later instances win where
    masks overlap). At most 65535 instances.
    """
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise ValueError("masks must be [H,W,N], got shape %s" % (m.shape,))
    n = m.shape[2]
    if n > 65535:
        raise ValueError("too many instances for a uint16 label image: %d" % n)
    m = _as_bool_masks(m, m.shape[0], m.shape[1])
    labels = np.zeros(m.shape[:2], np.uint16)
    for i in range(n):
        labels[m[:, :, i]] = i + 1
    return labels


def _pil_image(array):
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        return Image.fromarray(np.ascontiguousarray(a))          # L, RGB or RGBA
    if a.dtype == np.uint16 and a.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(a.astype("<u2")))
        if img.mode != "I;16":                                   # older Pillow
            img = Image.frombytes("I;16", (a.shape[1], a.shape[0]), a.astype("<u2").tobytes())
        return img
    raise ValueError("save_png supports uint8 [H,W], [H,W,3], [H,W,4] and uint16 [H,W]; "
                     "got %s %s" % (a.dtype, a.shape))


def save_png(array, path):
    """Write an array as a PNG file, atomically.

    array: uint8 [H,W] (grey), uint8 [H,W,3] (RGB), uint8 [H,W,4] (RGBA), uint16 [H,W]
    (16-bit grey, e.g. a label image) or bool [H,W] (written as 0/255 grey).
    The folder is created if needed; the file is written with mrcnn.durable.replacing, so
    readers never see a half-written file. Returns ``path``.
    """
    img = _pil_image(array)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path, "wb") as f:
        img.save(f, format="PNG")
    return path


def legend_strip(class_names, width):
    """A white strip [h, width, 3] uint8 naming each class next to a swatch of its colour.

    class_names: names in class-id order; "BG" (id 0) is left out. Entries that do not fit
    in ``width`` are dropped. Stack it under an overlay with np.vstack.
    """
    width = int(width)
    size = _font_size(width, width)
    font = _font(size)
    _, th, _, ty = _text_metrics(font, "Ag")
    pad = max(3, size // 2)
    height = th + 2 * pad
    pil = Image.new("RGB", (max(width, 1), height), (255, 255, 255))
    draw = ImageDraw.Draw(pil)
    x = pad
    for cid, name in enumerate(class_names):
        name = str(name)
        if cid == 0 and name.upper() == "BG":
            continue
        colour = _class_colour(name, cid)
        tw = _text_metrics(font, name)[0]
        swatch = th
        if x + swatch + pad // 2 + tw > width:
            break
        draw.rectangle([x, pad, x + swatch - 1, pad + th - 1], fill=colour)
        x += swatch + max(2, pad // 2)
        draw.text((x, pad - ty), name, font=font, fill=(0, 0, 0))
        x += tw + 2 * pad
    return np.asarray(pil, dtype=np.uint8)[:, :width].copy()
