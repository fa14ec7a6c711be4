"""Matterport's ``mrcnn.utils`` API: the :class:`Dataset` base class here, and the NumPy
helpers of :mod:`mrcnn.np_boxes` (boxes, overlaps, NMS, anchors), :mod:`mrcnn.np_images`
(images and masks), :mod:`mrcnn.ap` (Matterport's AP) and :mod:`mrcnn.download` (COCO
weights), re-exported under their Matterport names.

Pure NumPy (plus SciPy / scikit-image); it never imports TensorFlow, so the data pipeline
and evaluation code can use it cheaply.
"""
import logging

import numpy as np
import skimage.io

from mrcnn.ap import (compute_ap, compute_ap_range, compute_matches,  # noqa: F401
                      compute_recall, trim_zeros)
from mrcnn.download import COCO_MODEL_URL, download_trained_weights  # noqa: F401
from mrcnn.np_boxes import (apply_box_deltas, box_refinement, compute_iou,  # noqa: F401
                            compute_overlaps, compute_overlaps_masks, denorm_boxes,
                            extract_bboxes, generate_anchors, generate_pyramid_anchors,
                            non_max_suppression, norm_boxes)
from mrcnn.np_images import (_to_rgb_uint8, expand_mask, minimize_mask, resize,  # noqa: F401
                             resize_image, resize_mask, unmold_mask)

logger = logging.getLogger(__name__)



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
