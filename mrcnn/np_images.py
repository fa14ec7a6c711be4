"""NumPy images and masks (part of Matterport's ``mrcnn.utils`` API, which re-exports it):
dtype conversion to RGB uint8, colour normalisation, resizing and padding, mini-masks and
pasting masks back. Box and mask conventions: :mod:`mrcnn.np_boxes`."""
import random
import warnings

import numpy as np
import scipy.ndimage
import skimage.color
import skimage.transform

from mrcnn.config import check_color_normalization


def _to_uint8(image):
    """Convert an image array of any dtype to uint8 0..255.

    uint8 is returned as is; bool maps to 0/255; other integer dtypes are
    cast when all values already fit 0..255, otherwise scaled from the 16-bit
    range (0..65535 -> 0..255) or, for wider values, from the dtype's range;
    floats in [0, 1] are scaled by 255, other floats are clipped to 0..255.
    Scaling rounds to the nearest integer.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer):
        lo = image.min() if image.size else 0
        hi = image.max() if image.size else 0
        if lo >= 0 and hi <= 255:
            return image.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            full = 65535.0
        else:
            full = float(np.iinfo(image.dtype).max)
        scaled = np.clip(image.astype(np.float64), 0, None) * (255.0 / full)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float64)
        if image.size and np.nanmax(image) <= 1.0:
            image = image * 255.0
        return np.clip(np.round(np.nan_to_num(image)), 0, 255).astype(np.uint8)
    raise ValueError("Unsupported image dtype {}".format(image.dtype))


def _to_rgb_uint8(image):
    """[H, W], [H, W, 1|2|3|4] image of any dtype -> uint8 [H, W, 3] RGB."""
    image = _to_uint8(image)
    if image.ndim == 3 and image.shape[-1] in (1, 2):
        image = image[..., 0]  # grey (+ alpha)
    if image.ndim != 3:
        image = skimage.color.gray2rgb(image)
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError("Cannot convert an image of shape {} to RGB".format(image.shape))
    return np.ascontiguousarray(image, dtype=np.uint8)


############################################################
#  Colour normalisation
############################################################

NORMALIZED_MEAN, NORMALIZED_STD = 128.0, 50.0   # uint8 levels each channel is mapped to


def normalize_colors(image, mode):
    """Colour-normalise one RGB image [H, W, 3] (uint8, or any dtype _to_uint8 takes)
    -> uint8 [H, W, 3].

    "none" returns the image unchanged. "per-image" standardises each channel over the
    image's pixels to mean NORMALIZED_MEAN and standard deviation NORMALIZED_STD levels,
    clipped to 0..255. It removes the colour cast of a stain, a lamp or a camera's white
    balance, so smears from different sources look alike to the network; the same call
    runs in training and inference (Config.COLOR_NORMALIZATION). Statistics come from each
    channel's 256-bin histogram and the mapping is a 256-entry lookup table.
    """
    check_color_normalization(mode)
    if mode == "none":
        return image
    image = _to_uint8(image)
    levels = np.arange(256, dtype=np.float64)
    out = np.empty_like(image)
    for c in range(image.shape[-1]):
        hist = np.bincount(image[..., c].ravel(), minlength=256)
        mean = hist @ levels / hist.sum()
        std = max(np.sqrt(hist @ (levels - mean) ** 2 / hist.sum()), 1.0)
        lut = np.clip(np.round((levels - mean) * (NORMALIZED_STD / std) + NORMALIZED_MEAN), 0, 255)
        out[..., c] = lut.astype(np.uint8)[image[..., c]]
    return out


############################################################
#  Resizing
############################################################

def resize(image, output_shape, order=1, mode="constant", cval=0, clip=True,
           preserve_range=False, anti_aliasing=False, anti_aliasing_sigma=None):
    """Wrapper of ``skimage.transform.resize`` with anti-aliasing off by default.

    image: [H, W] or [H, W, C] array. output_shape: (h, w) or (h, w, C).
    order: spline order (0 nearest, 1 bilinear). A bool image with order > 0
        is converted to float64 first (skimage refuses to interpolate bools).
    Returns a float64 array (values in [0, 1] for integer input unless
    ``preserve_range``), or the input dtype for order 0 on bool.
    """
    image = np.asarray(image)
    if image.dtype == bool and order != 0:
        image = image.astype(np.float64)
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square", rng=None):
    """Resize (and pad or crop) an image, keeping its aspect ratio.

    image: [H, W, C] (or [H, W]) array of any dtype.
    min_dim: int; the short side is scaled up to at least this (never down).
    max_dim: int; "square" mode: the long side may not exceed it, and the
        output is max_dim x max_dim.
    min_scale: float; the scale is at least this (0/None = off).
    mode:
        "none": no change; window (0, 0, H, W), scale 1.
        "square": scale (see above), then zero-pad to [max_dim, max_dim]
            with (max_dim - h) // 2 rows on top and the rest at the bottom
            (same for left/right).
        "pad64": scale by min_dim/min_scale (max_dim is ignored), then
            zero-pad each side to the next multiple of 64, split in halves
            (top gets the smaller half). Asserts ``min_dim % 64 == 0``.
        "crop": scale by min_dim/min_scale, then take a random
            [min_dim, min_dim] crop (training only).
    rng: optional ``np.random.Generator`` for the "crop" offsets; the default
        uses Python's ``random`` module.

    Returns ``(image, window, scale, padding, crop)``:
        image: resized array with the input dtype (integer dtypes are rounded
            and clipped, not truncated).
        window: (y1, x1, y2, x2) ints, the part of the output holding the
            image (pixels, exclusive y2/x2).
        scale: the factor applied (1 if unchanged).
        padding: [(top, bottom), (left, right), (0, 0)] added pixels.
        crop: (y, x, h, w) of the crop in the scaled image, or None.
    Raises ``ValueError("Mode {} not supported")`` for any other mode.
    """
    if mode not in ("none", "square", "pad64", "crop"):
        raise ValueError("Mode {} not supported".format(mode))
    image = np.asarray(image)
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None

    if mode == "none":
        return image, window, scale, padding, crop

    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if mode == "square":
        assert max_dim, "resize_image: mode 'square' needs max_dim"
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max

    if scale != 1:
        out = resize(image, (round(h * scale), round(w * scale)), preserve_range=True)
        if np.issubdtype(image_dtype, np.integer):
            info = np.iinfo(image_dtype)
            out = np.clip(np.round(out), info.min, info.max)
        image = out.astype(image_dtype)
    h, w = image.shape[:2]

    if mode == "square":
        top_pad = (max_dim - h) // 2
        bottom_pad = max_dim - h - top_pad
        left_pad = (max_dim - w) // 2
        right_pad = max_dim - w - left_pad
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "pad64":
        assert min_dim is not None and min_dim % 64 == 0, "Minimum dimension must be a multiple of 64"
        top_pad, bottom_pad = _pad_to_multiple(h, 64)
        left_pad, right_pad = _pad_to_multiple(w, 64)
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding[:image.ndim], mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "crop":
        assert min_dim, "resize_image: mode 'crop' needs min_dim"
        if h < min_dim or w < min_dim:
            raise ValueError("Cannot crop {}x{} out of an image of {}x{}".format(min_dim, min_dim, h, w))
        if rng is None:
            y = random.randint(0, h - min_dim)
            x = random.randint(0, w - min_dim)
        else:
            y = int(rng.integers(0, h - min_dim + 1))
            x = int(rng.integers(0, w - min_dim + 1))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image.astype(image_dtype, copy=False), window, scale, padding, crop


def _pad_to_multiple(size, multiple):
    """(before, after) padding that brings ``size`` to the next multiple."""
    if size % multiple == 0:
        return 0, 0
    total = multiple - size % multiple
    return total // 2, total - total // 2


def resize_mask(mask, scale, padding, crop=None):
    """Apply the scale and padding (or crop) of :func:`resize_image` to masks.

    mask: [H, W, N] instance masks, any dtype (N may be 0).
    scale: the factor returned by resize_image.
    padding: [(top, bottom), (left, right), (0, 0)] from resize_image.
    crop: (y, x, h, w) from resize_image ("crop" mode) or None.

    Nearest-neighbour zoom (``scipy.ndimage.zoom``, order 0; output size
    ``round(H * scale), round(W * scale)`` like resize_image), then the crop
    or the zero padding. Returns an array of the input dtype.
    """
    mask = np.asarray(mask)
    dtype = mask.dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zoomed = scipy.ndimage.zoom(mask, zoom=[scale, scale, 1], order=0)
    if crop is not None:
        y, x, h, w = crop
        zoomed = zoomed[y:y + h, x:x + w]
    else:
        zoomed = np.pad(zoomed, padding, mode="constant", constant_values=0)
    return zoomed.astype(dtype, copy=False)


def minimize_mask(bbox, mask, mini_shape):
    """Crop each instance mask to its box and resize it to ``mini_shape``.

    bbox: [N, 4] int boxes (y1, x1, y2, x2) in pixels (exclusive y2/x2),
        e.g. from :func:`extract_bboxes`.
    mask: [H, W, N] masks, any dtype (non-zero = on).
    mini_shape: (h, w), e.g. config.MINI_MASK_SHAPE (56, 56).

    Returns: bool [h, w, N] (bilinear resize, then round, i.e. > 0.5).
    Raises ValueError("Invalid bounding box with area of zero") if a crop is empty.
    """
    mask = np.asarray(mask)
    bbox = np.asarray(bbox).reshape(-1, 4)
    n = mask.shape[-1]
    mini_shape = tuple(int(s) for s in mini_shape[:2])
    mini_mask = np.zeros(mini_shape + (n,), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        m = (mask[:, :, i] != 0)[y1:y2, x1:x2]
        if m.size == 0:
            raise ValueError("Invalid bounding box with area of zero")
        m = resize(m.astype(np.float64), mini_shape)
        mini_mask[:, :, i] = np.round(m) > 0
    return mini_mask


def expand_mask(bbox, mini_mask, image_shape):
    """Inverse of :func:`minimize_mask`: paste mini masks back at their boxes.

    bbox: [N, 4] int boxes (y1, x1, y2, x2) in pixels (exclusive y2/x2).
    mini_mask: [h, w, N] masks, any dtype.
    image_shape: (H, W[, C]) of the full image.

    Returns: bool [H, W, N]. Boxes with zero area give an empty mask; the
    parts of a box outside the image are dropped.
    """
    mini_mask = np.asarray(mini_mask)
    bbox = np.asarray(bbox).reshape(-1, 4)
    n = mini_mask.shape[-1]
    height, width = int(image_shape[0]), int(image_shape[1])
    mask = np.zeros((height, width, n), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in bbox[i][:4])
        m = mini_mask[:, :, i].astype(np.float64)
        _paste(mask[:, :, i], np.round(_resize_to_box(m, y2 - y1, x2 - x1)) > 0, y1, x1)
    return mask


def _resize_to_box(m, h, w):
    """Bilinear resize of a 2-D float array to (h, w); empty if h/w <= 0."""
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), dtype=np.float64)
    return resize(m, (h, w))


def _paste(canvas, patch, y1, x1):
    """Write ``patch`` into 2-D ``canvas`` at (y1, x1), clipped to the canvas."""
    ph, pw = patch.shape
    cy1, cx1 = max(y1, 0), max(x1, 0)
    cy2, cx2 = min(y1 + ph, canvas.shape[0]), min(x1 + pw, canvas.shape[1])
    if cy2 <= cy1 or cx2 <= cx1:
        return
    canvas[cy1:cy2, cx1:cx2] = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]


def unmold_mask(mask, bbox, image_shape):
    """Turn a predicted small float mask into a full-image binary mask.

    mask: [h, w] float mask (e.g. the 28x28 sigmoid output of the mask head).
    bbox: (y1, x1, y2, x2) int box in pixels of the target image (exclusive).
    image_shape: (H, W[, C]).

    Returns: bool [H, W]: the mask resized (bilinear) to the box size,
    thresholded at >= 0.5 and pasted at the box (clipped to the image).
    """
    threshold = 0.5
    y1, x1, y2, x2 = (int(v) for v in np.asarray(bbox).reshape(-1)[:4])
    m = _resize_to_box(np.asarray(mask, dtype=np.float64), y2 - y1, x2 - x1)
    full_mask = np.zeros(tuple(int(s) for s in image_shape[:2]), dtype=bool)
    _paste(full_mask, m >= threshold, y1, x1)
    return full_mask
