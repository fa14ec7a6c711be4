"""NumPy helpers of the Mask R-CNN library: datasets, boxes, masks, anchors, AP.

This module is pure NumPy (plus SciPy / scikit-image); it never imports
TensorFlow, so the data pipeline and evaluation code can use it cheaply.

Conventions used by every function here
---------------------------------------
* A box is ``(y1, x1, y2, x2)``.
* In **pixel** coordinates ``y2`` and ``x2`` are *exclusive*: the box
  ``(0, 0, 10, 10)`` covers rows 0..9 and columns 0..9, its height is
  ``y2 - y1 = 10`` and its area ``(y2 - y1) * (x2 - x1) = 100`` pixels.
* In **normalized** coordinates (see :func:`norm_boxes`) both corners are
  inclusive and ``0.0`` / ``1.0`` are the centres of the first / last pixel.
* Instance masks are ``[H, W, N]`` arrays (one channel per instance). Any
  dtype is accepted (bool, uint8 0/1 or 0/255, int); a pixel belongs to the
  instance when it is non-zero (``> 0.5`` for the mask-IoU functions).
* Class ids may arrive in any integer dtype; they are cast internally.
"""

import logging
import os
import random
import sys
import urllib.error
import urllib.request
import warnings

import numpy as np
import scipy.ndimage
import skimage.color
import skimage.io
import skimage.transform

logger = logging.getLogger(__name__)

#: Matterport's released COCO weights (Keras-2 HDF5 layout).
COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"

# Upper bound of elements per temporary array in compute_overlaps (~32 MB of float64).
_OVERLAP_CHUNK_ELEMENTS = 4_000_000


############################################################
#  Bounding boxes
############################################################

def extract_bboxes(mask):
    """Tight bounding boxes of instance masks.

    mask: [H, W, N] array of any dtype (bool, uint8, int, float); non-zero
        pixels belong to the instance.

    Returns: int32 [N, 4] boxes ``(y1, x1, y2, x2)`` in pixels, where y1/x1 are
    the first row/column that contains a pixel of the instance and y2/x2 are
    one past the last such row/column (exclusive). An instance without any
    pixel gets the box ``(0, 0, 0, 0)``. ``N == 0`` gives shape (0, 4).
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError("extract_bboxes expects a [H, W, N] mask, got shape {}".format(mask.shape))
    h, w, n = mask.shape
    boxes = np.zeros((n, 4), dtype=np.int32)
    if n == 0 or h == 0 or w == 0:
        return boxes
    nonzero = mask != 0
    rows = nonzero.any(axis=1)  # [H, N]
    cols = nonzero.any(axis=0)  # [W, N]
    present = rows.any(axis=0)  # [N]
    y1 = rows.argmax(axis=0)
    y2 = h - rows[::-1].argmax(axis=0)
    x1 = cols.argmax(axis=0)
    x2 = w - cols[::-1].argmax(axis=0)
    boxes[:] = np.stack([y1, x1, y2, x2], axis=1)
    boxes[~present] = 0
    return boxes


def compute_iou(box, boxes, box_area, boxes_area):
    """IoU of one box against many boxes.

    box: [4] ``(y1, x1, y2, x2)`` in pixels (exclusive y2/x2) or normalized.
    boxes: [N, 4] in the same coordinates.
    box_area: float, area of ``box`` computed by the caller as (y2-y1)*(x2-x1).
    boxes_area: [N] areas of ``boxes`` computed the same way.

    Returns: float64 [N] IoU in [0, 1]. Pairs whose union is 0 (two empty
    boxes) get 0.
    """
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    union = np.asarray(box_area, dtype=np.float64) + np.asarray(boxes_area, dtype=np.float64) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def compute_overlaps(boxes1, boxes2):
    """IoU matrix between two sets of boxes (vectorised).

    boxes1: [N1, 4], boxes2: [N2, 4] ``(y1, x1, y2, x2)``, both in the same
        coordinates (pixels with exclusive y2/x2, or normalized). Any numeric dtype.

    Returns: float64 [N1, N2] with ``overlaps[i, j] = IoU(boxes1[i], boxes2[j])``.
    Either set may be empty (result shape (0, N2) or (N1, 0)). The work is
    done in blocks of boxes2 so that a large anchor set (e.g. 261,888 anchors)
    against many boxes stays within a few tens of MB of temporaries.
    """
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    n1, n2 = b1.shape[0], b2.shape[0]
    overlaps = np.zeros((n1, n2), dtype=np.float64)
    if n1 == 0 or n2 == 0:
        return overlaps
    # Contiguous [N1, 1] columns broadcast fast against [chunk] rows of boxes2.
    y1a, x1a, y2a, x2a = (np.ascontiguousarray(b1[:, k])[:, None] for k in range(4))
    area1 = (y2a - y1a) * (x2a - x1a)
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    step = max(1, _OVERLAP_CHUNK_ELEMENTS // n1)
    for start in range(0, n2, step):
        c = b2[start:start + step]
        inter = np.minimum(y2a, c[:, 2])
        inter -= np.maximum(y1a, c[:, 0])
        np.maximum(inter, 0, out=inter)
        iw = np.minimum(x2a, c[:, 3])
        iw -= np.maximum(x1a, c[:, 1])
        np.maximum(iw, 0, out=iw)
        inter *= iw
        union = area1 + area2[start:start + step]
        union -= inter
        # Pairs with an empty union keep the 0 of the preallocated output.
        np.divide(inter, union, out=overlaps[:, start:start + step], where=union > 0)
    return overlaps


def compute_overlaps_masks(masks1, masks2):
    """IoU matrix between two sets of instance masks.

    masks1: [H, W, N1], masks2: [H, W, N2], any dtype; a pixel is "on" when
        its value is > 0.5 (so bool, 0/1 and 0/255 masks all work).

    Returns: float64 [N1, N2] mask IoU. If either set is empty the result is
    ``zeros((N1, N2))``. Pairs of two empty masks get 0.
    """
    masks1 = np.asarray(masks1)
    masks2 = np.asarray(masks2)
    n1, n2 = masks1.shape[-1], masks2.shape[-1]
    if n1 == 0 or n2 == 0:
        return np.zeros((n1, n2), dtype=np.float64)
    m1 = (masks1 > 0.5).reshape(-1, n1).astype(np.float32)
    m2 = (masks2 > 0.5).reshape(-1, n2).astype(np.float32)
    area1 = m1.sum(axis=0, dtype=np.float64)
    area2 = m2.sum(axis=0, dtype=np.float64)
    # float32 sums of 0/1 values are exact below 2**24 pixels (4096 x 4096).
    inter = (m1.T @ m2).astype(np.float64)
    union = area1[:, None] + area2[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def non_max_suppression(boxes, scores, threshold):
    """Greedy non-maximum suppression.

    boxes: [N, 4] ``(y1, x1, y2, x2)`` (pixels or normalized), N > 0.
    scores: [N] box scores (higher is better).
    threshold: float IoU; a box whose IoU with an already kept box is
        strictly greater than ``threshold`` is removed.

    Returns: int32 [K] indices (into ``boxes``) of the kept boxes, in order of
    decreasing score. Equal scores are visited in index order (stable).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    assert boxes.shape[0] > 0, "non_max_suppression needs at least one box"
    assert boxes.shape[0] == scores.shape[0], "boxes and scores must have the same length"
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-scores, kind="stable")
    pick = []
    while order.size > 0:
        i = order[0]
        pick.append(i)
        rest = order[1:]
        iou = compute_iou(boxes[i], boxes[rest], area[i], area[rest])
        order = rest[iou <= threshold]
    return np.array(pick, dtype=np.int32)


def apply_box_deltas(boxes, deltas):
    """Apply regression deltas to boxes (inverse of :func:`box_refinement`).

    boxes: [N, 4] ``(y1, x1, y2, x2)`` (pixels or normalized).
    deltas: [N, 4] ``(dy, dx, log(dh), log(dw))``: dy/dx are the centre shift
        in units of the box height/width, dh/dw the height/width factors.
        Deltas are *not* divided by any std dev here.

    Returns: float32 [N, 4] refined boxes in the coordinates of ``boxes``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    deltas = np.asarray(deltas, dtype=np.float64).reshape(-1, 4)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * np.exp(deltas[:, 2])
    width = width * np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1).astype(np.float32)


def box_refinement(box, gt_box):
    """Deltas that turn ``box`` into ``gt_box``.

    box, gt_box: [N, 4] ``(y1, x1, y2, x2)`` in the same coordinates (pixels
        or normalized); boxes must have non-zero height and width.

    Returns: float32 [N, 4] ``(dy, dx, log(dh), log(dw))`` with
    ``dy = (gt_cy - cy) / h``, ``dx = (gt_cx - cx) / w``,
    ``dh = gt_h / h``, ``dw = gt_w / w`` (no std-dev normalisation).
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    gt_box = np.asarray(gt_box, dtype=np.float64).reshape(-1, 4)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1).astype(np.float32)


############################################################
#  Dataset
############################################################

class Dataset(object):
    """Base class of datasets (Matterport API).

    Subclass it, register classes with :meth:`add_class` and images with
    :meth:`add_image`, override :meth:`load_mask` (and optionally
    :meth:`load_image` / :meth:`image_reference`), then call :meth:`prepare`.

    Attributes after ``prepare()``: ``num_classes``, ``class_ids`` (int
    arange), ``class_names`` (text before the first comma of each name),
    ``num_images``, ``image_ids`` (int arange), ``class_from_source_map``
    ({"source.id": internal class id}), ``image_from_source_map``
    ({"source.id": internal image index}), ``sources`` (list of sources, "" =
    background included) and ``source_class_ids`` ({source: [0, ids...]}).
    Internal class id 0 is always the background "BG".
    """

    def __init__(self, class_map=None):
        self._image_ids = []
        self.image_info = []
        # Background is always the first class.
        self.class_info = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids = {}

    def add_class(self, source, class_id, class_name):
        """Register a class. ``source`` (str, no ".") names the origin dataset,
        ``class_id`` is the id in that source and ``class_name`` its name.
        A (source, class_id) pair that already exists is silently skipped."""
        assert "." not in source, "Source name cannot contain a dot"
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source, image_id, path, **kwargs):
        """Register an image: ``{"id": image_id, "source": source, "path": path}``
        plus any extra keyword (width, height, polygons, class_ids, ...)."""
        image_info = {"id": image_id, "source": source, "path": path}
        image_info.update(kwargs)
        self.image_info.append(image_info)

    def image_reference(self, image_id):
        """A link / description of the image for debugging. Override it; the
        base returns ""."""
        return ""

    def prepare(self, class_map=None):
        """Build the derived lookup tables. Call after all add_class/add_image.
        ``class_map`` is accepted for compatibility and ignored."""

        def clean_name(name):
            """Text before the first comma of a class name."""
            return str(name).split(",")[0]

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        self.class_from_source_map = {
            "{}.{}".format(info["source"], info["id"]): class_id
            for info, class_id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {
            "{}.{}".format(info["source"], info["id"]): image_id
            for info, image_id in zip(self.image_info, self.image_ids)}

        # Unique sources in order of first appearance ("" = BG comes first).
        self.sources = list(dict.fromkeys(info["source"] for info in self.class_info))
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or info["source"] == source]

    def map_source_class_id(self, source_class_id):
        """Internal class id of a "source.id" string, e.g. "coco.12" -> 23.
        Raises KeyError for an unknown class."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id, source):
        """The id in ``source`` of internal class ``class_id`` (asserts that the
        class comes from that source)."""
        info = self.class_info[class_id]
        assert info["source"] == source, "Class {} is from source {!r}, not {!r}".format(
            class_id, info["source"], source)
        return info["id"]

    @property
    def image_ids(self):
        """Internal image ids: numpy int array ``arange(num_images)`` after
        prepare() (an empty list before)."""
        return self._image_ids

    def source_image_link(self, image_id):
        """Path or URL of the image (``image_info[image_id]["path"]``)."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id):
        """Read the image file of ``image_id``.

        Returns: uint8 [H, W, 3] RGB array. Grey images are replicated to 3
        channels, an alpha channel is dropped, and other bit depths are
        scaled to 0..255 (see :func:`_to_uint8`)."""
        image = skimage.io.imread(self.image_info[image_id]["path"])
        return _to_rgb_uint8(image)

    def load_mask(self, image_id):
        """Instance masks of an image. Override it.

        Subclass contract: returns ``(masks, class_ids)`` with masks a bool
        [H, W, N] array (uint8 / int also accepted by this library) and
        class_ids an int32 [N] array of internal class ids (> 0; negative =
        COCO crowd). The base logs a warning and returns empty arrays.
        """
        logger.warning("You are using the default load_mask(), maybe you need to define your own one.")
        mask = np.empty([0, 0, 0], dtype=bool)
        class_ids = np.empty([0], np.int32)
        return mask, class_ids


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


############################################################
#  Anchors
############################################################

def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
    """Anchors of one feature map level, in pixel coordinates.

    scales: anchor side(s) in pixels, a scalar or 1-D (e.g. 32).
    ratios: width/height ratios, e.g. [0.5, 1, 2]. For each (scale, ratio):
        height = scale / sqrt(ratio), width = scale * sqrt(ratio).
    shape: (rows, cols) of the feature map.
    feature_stride: pixels per feature-map cell (4 for P2 ... 64 for P6).
    anchor_stride: step, in cells, between anchor locations (usually 1).

    Anchor centres are at ``(y * feature_stride, x * feature_stride)`` for
    the cells ``y = 0, anchor_stride, ...`` (no half-stride offset).
    Returns: float64 [rows' * cols' * K, 4] boxes (y1, x1, y2, x2), ordered
    row-major over locations (y, then x), then over the K shapes: ratio
    major, scale minor (K = len(ratios) for a single scale).
    """
    scales = np.asarray(scales, dtype=np.float64).reshape(-1)
    ratios = np.asarray(ratios, dtype=np.float64).reshape(-1)
    ratio_grid, scale_grid = np.meshgrid(ratios, scales, indexing="ij")
    heights = (scale_grid / np.sqrt(ratio_grid)).reshape(-1)  # [K]
    widths = (scale_grid * np.sqrt(ratio_grid)).reshape(-1)

    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    cy, cx = np.meshgrid(shifts_y, shifts_x, indexing="ij")  # [rows, cols]
    cy = cy.reshape(-1, 1).astype(np.float64)  # [L, 1]
    cx = cx.reshape(-1, 1).astype(np.float64)
    boxes = np.stack([cy - 0.5 * heights, cx - 0.5 * widths,
                      cy + 0.5 * heights, cx + 0.5 * widths], axis=-1)  # [L, K, 4]
    return boxes.reshape(-1, 4)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride):
    """Anchors of all pyramid levels, concatenated level by level.

    scales: one anchor size per level, e.g. (32, 64, 128, 256, 512) for P2..P6.
    ratios: width/height ratios shared by all levels, e.g. [0.5, 1, 2].
    feature_shapes: [levels, 2] (rows, cols) per level, e.g. ceil(1024 / stride).
    feature_strides: pixels per cell per level, e.g. [4, 8, 16, 32, 64].
    anchor_stride: step in cells between anchor locations.

    Returns: float64 [A, 4] anchors (y1, x1, y2, x2) in pixels; level P2
    first, each level ordered as in :func:`generate_anchors`. With the COCO
    defaults at 1024x1024, A = 261,888.
    """
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
               for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


############################################################
#  Normalized coordinates
############################################################

def norm_boxes(boxes, shape):
    """Pixel boxes -> normalized boxes.

    boxes: [..., 4] (y1, x1, y2, x2) in pixels (exclusive y2/x2).
    shape: (height, width[, ...]) of the image in pixels.
    Returns: float32 [..., 4] ``(boxes - [0, 0, 1, 1]) / [h-1, w-1, h-1, w-1]``
    (inclusive corners; 0 and 1 are the first and last pixel centres).
    """
    h, w = shape[0], shape[1]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return ((np.asarray(boxes, dtype=np.float64) - shift) / scale).astype(np.float32)


def denorm_boxes(boxes, shape):
    """Normalized boxes -> pixel boxes (inverse of :func:`norm_boxes`).

    boxes: [..., 4] normalized (y1, x1, y2, x2).
    shape: (height, width[, ...]) in pixels.
    Returns: int32 [..., 4] ``round(boxes * [h-1, w-1, h-1, w-1] + [0, 0, 1, 1])``
    (exclusive y2/x2).
    """
    h, w = shape[0], shape[1]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], dtype=np.float64)
    shift = np.array([0, 0, 1, 1], dtype=np.float64)
    return np.around(np.asarray(boxes, dtype=np.float64) * scale + shift).astype(np.int32)


############################################################
#  Evaluation (Matterport-style AP; the product's COCO AP uses pycocotools)
############################################################

def trim_zeros(x):
    """Drop the rows of a 2-D array that are all zero (zero padding).

    x: [N, C]. Returns [M, C] with M <= N, rows in their original order.
    """
    x = np.asarray(x)
    assert x.ndim == 2, "trim_zeros expects a 2-D array"
    return x[~np.all(x == 0, axis=1)]


def compute_matches(gt_boxes, gt_class_ids, gt_masks,
                    pred_boxes, pred_class_ids, pred_scores, pred_masks,
                    iou_threshold=0.5, score_threshold=0.0):
    """Greedy matching of predictions to ground truth by **mask** IoU.

    gt_boxes: [G, 4] pixel boxes; all-zero rows are padding and are dropped
        together with their class id and mask.
    gt_class_ids: [G] ints. gt_masks: [H, W, G] any dtype.
    pred_boxes: [P, 4] (all-zero rows dropped likewise), pred_class_ids: [P],
    pred_scores: [P] floats, pred_masks: [H, W, P] any dtype.
    iou_threshold: minimum mask IoU of a match.
    score_threshold: predictions scoring below it are never matched.

    Predictions are sorted by decreasing score (stable). Each prediction, in
    that order, takes the unmatched GT with the highest IoU that has the same
    class, provided the IoU is >= iou_threshold (a GT of another class is
    skipped, not matched).

    Returns ``(gt_match, pred_match, overlaps)``:
        gt_match: int32 [G'] index (in score order) of the matched prediction, -1 = none.
        pred_match: int32 [P'] in score order: index of the matched GT, -1 = none.
        overlaps: float64 [P', G'] mask IoU, rows in score order.
    """
    gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes).reshape(-1, 4)
    gt_keep = ~np.all(gt_boxes == 0, axis=1)
    pred_keep = ~np.all(pred_boxes == 0, axis=1)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)[:len(gt_keep)][gt_keep].astype(np.int64)
    gt_masks = np.asarray(gt_masks)[..., :len(gt_keep)][..., gt_keep]
    pred_class_ids = np.asarray(pred_class_ids).reshape(-1)[:len(pred_keep)][pred_keep].astype(np.int64)
    pred_scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)[:len(pred_keep)][pred_keep]
    pred_masks = np.asarray(pred_masks)[..., :len(pred_keep)][..., pred_keep]

    order = np.argsort(-pred_scores, kind="stable")
    pred_class_ids = pred_class_ids[order]
    pred_scores = pred_scores[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    n_pred, n_gt = overlaps.shape
    pred_match = -np.ones(n_pred, dtype=np.int32)
    gt_match = -np.ones(n_gt, dtype=np.int32)
    for i in range(n_pred):
        if pred_scores[i] < score_threshold:
            continue
        for j in np.argsort(-overlaps[i], kind="stable"):
            if gt_match[j] > -1:
                continue
            if overlaps[i, j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks,
               pred_boxes, pred_class_ids, pred_scores, pred_masks,
               iou_threshold=0.5):
    """Average precision at one mask-IoU threshold (VOC all-point style).

    Arguments as in :func:`compute_matches`.
    Returns ``(mAP, precisions, recalls, overlaps)``:
        mAP: float, sum over recall steps of (recall step) x (interpolated
            precision), where the precision curve is made monotone
            non-increasing from the right.
        precisions: float64 [P'+2], interpolated, with sentinels 0 at both ends.
        recalls: float64 [P'+2], with sentinels 0 at the start and 1 at the end.
        overlaps: float64 [P', G'] mask IoU (score-sorted predictions).
    With no GT instance the AP is 1.0 if there is no prediction either and
    0.0 otherwise (every prediction is a false positive).
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    n_gt = len(gt_match)
    hits = np.cumsum(pred_match > -1).astype(np.float64)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    recalls = hits / max(n_gt, 1)
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    # Monotone precision: each point takes the max of all points to its right.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    if n_gt == 0:
        return (1.0 if len(pred_match) == 0 else 0.0), precisions, recalls, overlaps
    steps = np.where(recalls[1:] != recalls[:-1])[0] + 1
    m_ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return m_ap, precisions, recalls, overlaps


def compute_ap_range(gt_box, gt_class_id, gt_mask,
                     pred_box, pred_class_id, pred_score, pred_mask,
                     iou_thresholds=None, verbose=1):
    """Mean AP over several mask-IoU thresholds.

    iou_thresholds: iterable of floats; default ``np.arange(0.5, 1.0, 0.05)``
        (0.50, 0.55, ..., 0.95, COCO style).
    verbose: print the AP at each threshold and the mean when > 0.
    Returns: float mean AP.
    """
    if iou_thresholds is None:
        iou_thresholds = np.arange(0.5, 1.0, 0.05)
    iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    aps = []
    for t in iou_thresholds:
        ap = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
                        iou_threshold=t)[0]
        if verbose:
            print("AP @{:.2f}:\t {:.3f}".format(t, ap))
        aps.append(ap)
    mean_ap = float(np.mean(aps)) if aps else 0.0
    if verbose and aps:
        print("AP @{:.2f}-{:.2f}:\t {:.3f}".format(iou_thresholds[0], iou_thresholds[-1], mean_ap))
    return mean_ap


def compute_recall(pred_boxes, gt_boxes, iou):
    """Box recall of a set of predicted boxes (e.g. RPN proposals).

    pred_boxes: [P, 4], gt_boxes: [G, 4] in the same coordinates.
    iou: float IoU threshold.
    Returns ``(recall, positive_ids)``: recall = (number of distinct GT boxes
    that some prediction overlaps with IoU >= iou) / G (1.0 when G == 0);
    positive_ids = int indices of the predictions whose best IoU is >= iou.
    """
    overlaps = compute_overlaps(pred_boxes, gt_boxes)  # [P, G]
    n_pred, n_gt = overlaps.shape
    if n_gt == 0:
        return 1.0, np.zeros([0], dtype=np.int64)
    if n_pred == 0:
        return 0.0, np.zeros([0], dtype=np.int64)
    positive_ids = np.where(overlaps.max(axis=1) >= iou)[0]
    recalled = np.count_nonzero(overlaps.max(axis=0) >= iou)
    return recalled / n_gt, positive_ids


############################################################
#  Pretrained weights
############################################################

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def download_trained_weights(coco_model_path, verbose=1):
    """Download Matterport's COCO weights (``COCO_MODEL_URL``) to ``coco_model_path``.

    The file is written to ``<coco_model_path>.part`` and renamed only when
    complete, after checking that its size equals the server's
    Content-Length and that it is an HDF5 file; an interrupted download never
    leaves a half file under the final name. ``verbose`` > 0 prints messages
    and shows a tqdm progress bar.

    Raises RuntimeError (with the URL and where to put the file by hand) if
    the download fails, e.g. when the machine is offline.
    """
    coco_model_path = os.fspath(coco_model_path)
    part_path = coco_model_path + ".part"
    manual = ("If this machine is offline, download {} on another machine and place it at {}"
              .format(COCO_MODEL_URL, os.path.abspath(coco_model_path)))
    if verbose > 0:
        print("Downloading pretrained model to " + coco_model_path + " ...")
    parent = os.path.dirname(os.path.abspath(coco_model_path))
    os.makedirs(parent, exist_ok=True)
    try:
        from tqdm import tqdm

        request = urllib.request.Request(COCO_MODEL_URL, headers={"User-Agent": "mrcnn"})
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length else None
            with open(part_path, "wb") as out, tqdm(
                    total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=os.path.basename(coco_model_path), disable=verbose <= 0,
                    file=sys.stdout) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
        size = os.path.getsize(part_path)
        if expected is not None and size != expected:
            raise RuntimeError("Download of the COCO weights failed: got {} of {} bytes from {}. {}"
                               .format(size, expected, COCO_MODEL_URL, manual))
        with open(part_path, "rb") as f:
            head = f.read(2048 + len(_HDF5_SIGNATURE))
        if not any(head[o:o + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE for o in (0, 512, 1024, 2048)):
            raise RuntimeError("Download of the COCO weights failed: {} did not return an HDF5 file. {}"
                               .format(COCO_MODEL_URL, manual))
        os.replace(part_path, coco_model_path)
    except RuntimeError:
        _remove_quietly(part_path)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        _remove_quietly(part_path)
        raise RuntimeError("Download of the COCO weights from {} failed ({}). {}"
                           .format(COCO_MODEL_URL, e, manual)) from e
    except BaseException:
        _remove_quietly(part_path)
        raise
    if verbose > 0:
        print("... done downloading pretrained model!")


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
