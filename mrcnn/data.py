"""Input side of the model: molding images, image meta, ground truth and the training input.

A training sample, after `build_training_sample`, is the tuple (fixed shapes per config):
  image       float32 [H, W, C]   molded (MEAN_PIXEL subtracted), H, W = IMAGE_SHAPE[:2]
  image_meta  float32 [IMAGE_META_SIZE]
  rpn_match   int32   [A, 1]      1 positive, -1 negative, 0 neutral anchor
  rpn_bbox    float32 [RPN_TRAIN_ANCHORS_PER_IMAGE, 4]
  gt_class_ids int32  [MAX_GT_INSTANCES]          zero-padded
  gt_boxes    float32 [MAX_GT_INSTANCES, 4]       pixels, zero-padded
  gt_masks    bool    [mh, mw, MAX_GT_INSTANCES]  mini masks (or full masks), zero-padded
"""
import collections
import collections.abc
import concurrent.futures
import functools
import logging
import os

import numpy as np

from mrcnn import utils
from mrcnn.backbone import compute_backbone_shapes
from mrcnn.np_images import normalize_colors
from mrcnn.rpn_targets import build_rpn_targets

logger = logging.getLogger("mrcnn")


def mold_image(images, config):
    """RGB uint8 image(s) -> float32 with MEAN_PIXEL subtracted (no scaling, no BGR swap)."""
    return images.astype(np.float32) - config.MEAN_PIXEL.astype(np.float32)


def unmold_image(normalized_images, config):
    """Inverse of mold_image -> uint8."""
    return np.clip(normalized_images + config.MEAN_PIXEL, 0, 255).astype(np.uint8)


def compose_image_meta(image_id, original_image_shape, image_shape, window, scale,
                       active_class_ids):
    """1-D float array [12 + NUM_CLASSES]:
    [image_id | original H, W, C | molded H, W, C | window y1, x1, y2, x2 | scale | active ids]."""
    return np.array([image_id] + list(original_image_shape) + list(image_shape) + list(window)
                    + [scale] + list(active_class_ids), dtype=np.float32)


def parse_image_meta(meta):
    """Split image_meta [B, M] (numpy) into its named parts."""
    return {
        "image_id": meta[:, 0].astype(np.int32),
        "original_image_shape": meta[:, 1:4].astype(np.int32),
        "image_shape": meta[:, 4:7].astype(np.int32),
        "window": meta[:, 7:11].astype(np.int32),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": meta[:, 12:].astype(np.int32),
    }


def get_anchors_pixels(config, image_shape):
    """Pyramid anchors [A, 4] in pixels for a molded image shape (H, W, ...), on the levels
    from PYRAMID_MIN_LEVEL up (RPN_ANCHOR_SCALES and BACKBONE_STRIDES list P2..P6; the
    entries of skipped levels are dropped)."""
    skip = config.PYRAMID_MIN_LEVEL - 2
    return utils.generate_pyramid_anchors(
        config.RPN_ANCHOR_SCALES[skip:], config.RPN_ANCHOR_RATIOS,
        compute_backbone_shapes(config, image_shape)[skip:], config.BACKBONE_STRIDES[skip:],
        config.RPN_ANCHOR_STRIDE)


def apply_augmentation(augmentation, image, mask):
    """Apply an albumentations transform to image [H, W, 3] and masks [H, W, N] together.

    Any callable with albumentations' calling convention works:
    `augmentation(image=..., masks=[...]) -> {"image": ..., "masks": [...]}`.
    """
    if augmentation is True or not callable(augmentation):
        raise TypeError("augmentation must be an albumentations transform (e.g. A.Compose([...])),"
                        f" not {augmentation!r}")
    if hasattr(augmentation, "to_deterministic"):
        raise TypeError("imgaug augmenters are not supported (imgaug fails under NumPy 2); "
                        "use an albumentations transform")
    masks = [np.ascontiguousarray(mask[..., i], dtype=np.uint8) for i in range(mask.shape[-1])]
    out = augmentation(image=image, masks=masks)
    aug_image = np.asarray(out["image"])
    aug_masks = [np.asarray(m) for m in out.get("masks", masks)]
    aug_mask = (np.stack(aug_masks, axis=-1) if aug_masks
                else np.zeros(aug_image.shape[:2] + (0,), bool)).astype(bool)
    if aug_image.shape != image.shape or aug_mask.shape != mask.shape:
        raise ValueError("augmentation must not change the image shape "
                         f"({image.shape} -> {aug_image.shape}); resize in the config instead")
    return aug_image, aug_mask


def load_resized_image(dataset, config, image_id):
    """One image as training sees it before augmentation, colour-normalised, resized and
    padded: -> (original shape (h, w, 3), (image uint8 [H, W, 3], window, scale, padding,
    crop) as utils.resize_image gives them)."""
    image = normalize_colors(dataset.load_image(image_id), config.COLOR_NORMALIZATION)
    return image.shape, utils.resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM, mode=config.IMAGE_RESIZE_MODE)


class ResizedImages(collections.abc.Sequence):
    """A dataset's images as training sees them before augmentation (load_resized_image),
    read when indexed: item i is uint8 [H, W, 3] of the i-th image id. Reference images for
    augmentations that borrow another image's look (histogram matching). The last
    `cache_size` items read are kept: albumentations' HistogramMatching reads item 0 on every
    call to check its type, which would otherwise load and resize that image each time. Kept
    items are shared between callers, so they are returned read-only."""

    def __init__(self, dataset, config, cache_size=16):
        self.dataset, self.config = dataset, config
        self._read = functools.lru_cache(maxsize=cache_size)(self._load)

    def __len__(self):
        return len(self.dataset.image_ids)

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        return self._read(i % len(self))

    def _load(self, i):
        image = load_resized_image(self.dataset, self.config, self.dataset.image_ids[i])[1][0]
        image.setflags(write=False)
        return image


def load_image_gt(dataset, config, image_id, augmentation=None, use_mini_mask=False):
    """Load, colour-normalise, resize and (optionally) augment one image and its instances.

    Returns image uint8 [H, W, C] (molded size, not mean-subtracted), image_meta [M],
    class_ids int32 [N], bbox int32 [N, 4] (pixels), mask bool [H, W, N] or
    [mh, mw, N] with use_mini_mask. Instances whose mask is empty after resizing and
    augmentation are dropped.
    """
    original_shape, (image, window, scale, padding, crop) = load_resized_image(
        dataset, config, image_id)
    mask, class_ids = dataset.load_mask(image_id)
    mask = np.asarray(mask).astype(bool)
    class_ids = np.asarray(class_ids).astype(np.int32)
    mask = utils.resize_mask(mask, scale, padding, crop)
    if augmentation is not None:
        image, mask = apply_augmentation(augmentation, image, mask)
    keep = np.any(mask, axis=(0, 1)) if mask.shape[-1] else np.zeros(0, bool)
    mask, class_ids = mask[:, :, keep], class_ids[keep]
    bbox = utils.extract_bboxes(mask)
    active_class_ids = np.zeros(dataset.num_classes, np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1
    if use_mini_mask:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)
    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale,
                                    active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def build_training_sample(dataset, config, image_id, anchors, augmentation=None, rng=None):
    """One fixed-shape training sample (module docstring), or None if it has no instance."""
    rng = rng or np.random.default_rng()
    image, meta, class_ids, boxes, masks = load_image_gt(
        dataset, config, image_id, augmentation=augmentation, use_mini_mask=config.USE_MINI_MASK)
    if not np.any(class_ids > 0):
        return None
    rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, class_ids, boxes, config, rng=rng)
    if len(class_ids) > config.MAX_GT_INSTANCES:
        keep = rng.choice(len(class_ids), config.MAX_GT_INSTANCES, replace=False)
        class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[:, :, keep]
    n, g = len(class_ids), config.MAX_GT_INSTANCES
    gt_class_ids = np.zeros(g, np.int32)
    gt_boxes = np.zeros((g, 4), np.float32)
    gt_masks = np.zeros(masks.shape[:2] + (g,), bool)
    gt_class_ids[:n], gt_boxes[:n], gt_masks[:, :, :n] = class_ids, boxes, masks
    return (mold_image(image, config), meta, rpn_match[:, None].astype(np.int32),
            rpn_bbox.astype(np.float32), gt_class_ids, gt_boxes, gt_masks)


class TrainingInput:
    """An endless, shuffled stream of fixed-shape training batches of a Dataset.

    `workers` threads decode, augment and build targets for up to `prefetch` samples ahead of
    the model (the model's TensorFlow ops release the GIL, so loading overlaps compute).
    Images without instances are skipped; an image that fails to load is logged and skipped,
    and more than `max_errors` failures stop training with the last error.

    `sample_weights` (one number >= 0 per image id, e.g. more for images of rare classes) draws
    images with replacement in proportion to them; without, every image comes once per pass
    in a shuffled order.

    We use threads rather than tf.data + tf.numpy_function: that combination deadlocks here
    when an iterator is torn down while a Python call is in flight (e.g. after an error).
    """

    def __init__(self, dataset, config, augmentation=None, shuffle=True, seed=None,
                 max_errors=5, workers=None, prefetch=None, sample_weights=None):
        if dataset.num_classes != config.NUM_CLASSES:
            raise ValueError(f"the dataset has {dataset.num_classes} classes (background "
                             f"included) but config.NUM_CLASSES is {config.NUM_CLASSES}")
        if not len(dataset.image_ids):
            raise ValueError("the dataset has no images")
        self.dataset = dataset
        self.config = config
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.max_errors = max_errors
        self.workers = workers or max(os.cpu_count() or 1, 1)
        self.prefetch = prefetch or 2 * config.BATCH_SIZE + self.workers
        self.anchors = get_anchors_pixels(config, config.IMAGE_SHAPE)
        self.errors = []
        self._rng = np.random.default_rng(seed)
        self.probabilities = None
        if sample_weights is not None:
            weights = np.asarray(sample_weights, np.float64)
            if (weights.shape != (len(dataset.image_ids),) or not np.isfinite(weights).all()
                    or (weights < 0).any() or not weights.sum()):
                raise ValueError("sample_weights needs one finite number >= 0 per image, "
                                 "not all 0")
            self.probabilities = weights / weights.sum()

    def _image_id_stream(self):
        ids = np.asarray(self.dataset.image_ids)
        while True:
            if self.probabilities is not None:
                yield from self._rng.choice(ids, size=len(ids), p=self.probabilities)
            else:
                yield from (self._rng.permutation(ids) if self.shuffle else ids)

    def _load(self, image_id, seed):
        try:
            return build_training_sample(self.dataset, self.config, int(image_id), self.anchors,
                                         self.augmentation, np.random.default_rng(seed))
        except Exception as exc:  # reported, skipped, and fatal only when repeated
            info = self.dataset.image_info[int(image_id)]
            logger.warning("Error processing image %s: %s", info.get("path") or info["id"], exc)
            self.errors.append((info.get("path"), exc))
            if len(self.errors) > self.max_errors:
                raise
            return None

    def batches(self):
        """Yield tuples of numpy arrays [BATCH_SIZE, ...] (see module docstring), forever."""
        ids = self._image_id_stream()
        pending = collections.deque()
        with concurrent.futures.ThreadPoolExecutor(self.workers, "mrcnn-data") as pool:
            try:
                batch, empty_run = [], 0
                while True:
                    while len(pending) < self.prefetch:
                        pending.append(pool.submit(self._load, next(ids),
                                                   int(self._rng.integers(1 << 62))))
                    sample = pending.popleft().result()
                    if sample is None:
                        empty_run += 1
                        if empty_run > 10 * len(self.dataset.image_ids) + 10:
                            raise ValueError("no image of the dataset has an instance to train on")
                        continue
                    empty_run = 0
                    batch.append(sample)
                    if len(batch) == self.config.BATCH_SIZE:
                        yield tuple(np.stack(parts) for parts in zip(*batch))
                        batch = []
            finally:
                for future in pending:
                    future.cancel()


def data_generator(dataset, config, shuffle=True, augmentation=None, batch_size=1, seed=None,
                   **_ignored):
    """Matterport-compatible endless generator of ([inputs...], []) batches (numpy)."""
    anchors = get_anchors_pixels(config, config.IMAGE_SHAPE)
    rng = np.random.default_rng(seed)
    ids = np.copy(dataset.image_ids)
    while True:
        if shuffle:
            rng.shuffle(ids)
        batch = []
        for image_id in ids:
            sample = build_training_sample(dataset, config, image_id, anchors, augmentation, rng)
            if sample is None:
                continue
            batch.append(sample)
            if len(batch) == batch_size:
                yield [np.stack(parts) for parts in zip(*batch)], []
                batch = []
