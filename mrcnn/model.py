"""MaskRCNN: build the training or inference graph, train, detect, load and save weights.

Matterport's public API on TensorFlow 2 / Keras 3. The graph is split by stage over
backbone.py (ResNet + FPN), rpn.py (RPN head, proposals), roi.py (ROIAlign, targets,
detections), heads.py (classifier, box and mask heads) and losses.py; data.py holds the
input pipeline and weights.py the HDF5 files. Training runs a `tf.function` step of our own
(SGD with momentum, per-tensor gradient clipping, Matterport's L2 term) rather than
`Model.fit`, which Keras 3 no longer lets us feed Matterport's loss layers through.
"""
import csv
import datetime
import errno
import logging
import math
import os
import re
import sys
import time

import numpy as np
import tensorflow as tf
import keras
from keras import layers as KL

from mrcnn import durable, utils
from mrcnn import weights as weights_io
from mrcnn.backbone import (BatchNorm, build_backbone, compute_backbone_shapes,  # noqa: F401
                            conv_block, fpn_graph, identity_block, resnet_graph)
from mrcnn.box_ops import (apply_box_deltas_graph, batch_pack_graph,  # noqa: F401
                           clip_boxes_graph, denorm_boxes_graph, norm_boxes_graph,
                           overlaps_graph, trim_zeros_graph)
from mrcnn.data import (TrainingInput, compose_image_meta, data_generator,  # noqa: F401
                        load_image_gt, mold_image, parse_image_meta, unmold_image)
from mrcnn.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn import precision, schedule
from mrcnn.losses import (l2_penalty, mrcnn_bbox_loss_graph, mrcnn_class_loss_graph,  # noqa: F401
                          mrcnn_mask_loss_graph, rpn_bbox_loss_graph, rpn_class_loss_graph,
                          smooth_l1_loss)
from mrcnn.roi import (DetectionLayer, DetectionTargetLayer, LeadingRows,  # noqa: F401
                       PadRowsTo, PyramidROIAlign, log2_graph, mask_roi_count,
                       parse_image_meta_graph)
from mrcnn.np_images import normalize_colors
from mrcnn.optimizer import MomentumSGD
from mrcnn.precision import FLOAT32_LAYER, Float32Layer
from mrcnn.rpn import ProposalLayer, build_rpn_model, rpn_graph  # noqa: F401
from mrcnn.rpn_targets import build_rpn_targets  # noqa: F401

logger = logging.getLogger("mrcnn")

LOSS_NAMES = ["rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
              "mrcnn_mask_loss"]

LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}


def checkpoint_files(folder):
    """Sorted names of the checkpoints (mask_rcnn*.h5) in a run folder; [] if it is missing."""
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.startswith("mask_rcnn") and f.endswith(".h5"))


CHECKPOINT_RE = re.compile(r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]"
                           r"mask\_rcnn\_[\w-]+(\d{4})\.h5$")

IMAGENET_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/v0.2/"
                "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def log(text, array=None):
    """Print text, and for an array its shape, min, max and dtype (Matterport's format)."""
    if array is not None:
        array = np.asarray(array)
        text = text.ljust(25)
        text += "shape: {:20}  ".format(str(array.shape))
        if array.size:
            text += "min: {:10.5f}  max: {:10.5f}".format(array.min(), array.max())
        else:
            text += "min: {:10}  max: {:10}".format("", "")
        text += "  {}".format(array.dtype)
    print(text)


class CheckpointPath(str):
    """The path of a checkpoint, as returned by find_last().

    It is a plain string path; old scripts written for Matterport v2.0, where find_last()
    returned (log_dir, checkpoint), index it with [1] and get the checkpoint too ([0] gives
    the folder). Any other indexing or slicing behaves like a string.
    """

    def __getitem__(self, key):
        if key == 1:
            return str(self)
        if key == 0:
            return os.path.dirname(self)
        return str.__getitem__(self, key)


def find_last(model_dir, name):
    """Newest checkpoint (mask_rcnn_*.h5) of the newest run folder `<name.lower()>*` under
    model_dir that has one; run folders without a checkpoint yet (a run that just started or
    died before its first epoch) are passed over. Raises FileNotFoundError."""
    name = name.lower()
    runs = sorted(d for d in (os.listdir(model_dir) if os.path.isdir(model_dir) else [])
                  if d.startswith(name) and os.path.isdir(os.path.join(model_dir, d)))
    for run in reversed(runs):
        folder = os.path.join(model_dir, run)
        files = checkpoint_files(folder)
        if files:
            return CheckpointPath(os.path.join(folder, files[-1]))
    if not runs:
        raise FileNotFoundError(errno.ENOENT, f"Could not find model directory under {model_dir}")
    raise FileNotFoundError(errno.ENOENT, "Could not find weight files in "
                            f"{os.path.join(model_dir, runs[-1])}")


# ----------------------------------------------------------------------------- small layers
class ConstantAnchors(Float32Layer):
    """The training graph's anchors [B, A, 4] (normalized), fixed by config.IMAGE_SHAPE."""

    def __init__(self, anchors, **kwargs):
        super().__init__(**kwargs)
        self.anchors = np.asarray(anchors, np.float32)

    def call(self, image):
        anchors = tf.constant(self.anchors)
        return tf.broadcast_to(anchors[None], [tf.shape(image)[0]] + list(self.anchors.shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.anchors.shape


class NormBoxes(Float32Layer):
    """Pixel boxes [B, N, 4] -> normalized, for the size of image [B, H, W, C]."""

    def call(self, inputs):
        boxes, image = inputs
        return norm_boxes_graph(tf.cast(boxes, tf.float32), tf.shape(image)[1:3])

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class LossLayer(Float32Layer):
    """Wrap one loss function so the training graph exposes it as a named scalar output."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, inputs):
        return tf.reshape(self.fn(*inputs), [1])

    def compute_output_shape(self, input_shape):
        return (1,)


# ----------------------------------------------------------------------------- the model
class MaskRCNN:
    """Mask R-CNN in "training" or "inference" mode; `keras_model` is the Keras model."""

    def __init__(self, mode, config, model_dir):
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', not {mode!r}")
        self.mode = mode
        self.config = config
        self.model_dir = model_dir
        self._anchor_cache = {}
        self._predict_fn = None
        # Our addition: what save_weights stores in each checkpoint (weights.read_settings);
        # None stores config.to_dict(). WBC.py sets the run's config.json values here.
        self.checkpoint_settings = None
        # Our addition: the epoch the running (or last) train() call ends at; see set_last_epoch.
        self.last_epoch = None
        self._rate = None
        self.set_log_dir()
        self.keras_model = self.build(mode=mode, config=config)

    # -- graph ---------------------------------------------------------------------------
    def build(self, mode, config):
        """Build the Keras model. Inputs and outputs are listed in README (library API).
        Layers compute in config.COMPUTE_DTYPE (precision.py); weights are float32."""
        with precision.layer_policy(precision.compute_dtype(config)):
            return self._build_graph(mode, config)

    def _build_graph(self, mode, config):
        h, w = config.IMAGE_SHAPE[:2]
        if h / 2 ** 6 != int(h / 2 ** 6) or w / 2 ** 6 != int(w / 2 ** 6):
            raise ValueError("Image size must be dividable by 2 at least 6 times to avoid "
                             "fractions when downscaling and upscaling. For example, use 256, "
                             "320, 384, 448, 512, ... etc.")
        training = mode == "training"
        input_image = KL.Input(shape=[None, None, config.IMAGE_SHAPE[2]], name="input_image")
        input_image_meta = KL.Input(shape=[config.IMAGE_META_SIZE], name="input_image_meta")
        if training:
            input_rpn_match = KL.Input(shape=[None, 1], name="input_rpn_match", dtype="int32")
            input_rpn_bbox = KL.Input(shape=[None, 4], name="input_rpn_bbox")
            input_gt_class_ids = KL.Input(shape=[None], name="input_gt_class_ids", dtype="int32")
            input_gt_boxes = KL.Input(shape=[None, 4], name="input_gt_boxes")
            gt_boxes = NormBoxes(name="norm_gt_boxes")([input_gt_boxes, input_image])
            mask_hw = (config.MINI_MASK_SHAPE if config.USE_MINI_MASK
                       else tuple(config.IMAGE_SHAPE[:2]))
            input_gt_masks = KL.Input(shape=list(mask_hw) + [None], name="input_gt_masks",
                                      dtype="bool")
        else:
            input_anchors = KL.Input(shape=[None, 4], name="input_anchors")

        train_bn = config.TRAIN_BN
        _, c2, c3, c4, c5 = build_backbone(input_image, config)
        rpn_feature_maps, unused_layers = fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE,
                                                    config.PYRAMID_MIN_LEVEL)
        mrcnn_feature_maps = rpn_feature_maps[:-1]     # P{min}..P5; P6 only feeds the RPN

        if training:
            anchors = ConstantAnchors(self.get_anchors(config.IMAGE_SHAPE), name="anchors")(input_image)
        else:
            anchors = input_anchors

        rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS),
                              config.TOP_DOWN_PYRAMID_SIZE)
        level_outputs = [rpn([p]) for p in rpn_feature_maps]
        rpn_class_logits, rpn_class, rpn_bbox = [
            KL.Concatenate(axis=1, name=name, **FLOAT32_LAYER)([out[i] for out in level_outputs])
            for i, name in enumerate(["rpn_class_logits", "rpn_class", "rpn_bbox"])]

        proposal_count = config.POST_NMS_ROIS_TRAINING if training else config.POST_NMS_ROIS_INFERENCE
        rpn_rois = ProposalLayer(proposal_count, config.RPN_NMS_THRESHOLD, config=config,
                                 name="ROI")([rpn_class, rpn_bbox, anchors])
        heads = dict(feature_maps=mrcnn_feature_maps, image_meta=input_image_meta,
                     num_classes=config.NUM_CLASSES, train_bn=train_bn,
                     min_level=config.PYRAMID_MIN_LEVEL,
                     roi_canonical_size=config.ROI_CANONICAL_SIZE)

        if not training:
            mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
                rpn_rois, pool_size=config.POOL_SIZE,
                fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
                dropout=config.CLASSIFIER_DROPOUT, **heads)
            detections = DetectionLayer(config, name="mrcnn_detection")(
                [rpn_rois, mrcnn_class, mrcnn_bbox, input_image_meta])
            # Masks only for real detections (rows with a class id), padded back to DMI rows.
            (detected,) = LeadingRows(name="detected_rows")([detections[..., 4], detections])
            mrcnn_mask = build_fpn_mask_graph(detected[..., :4], pool_size=config.MASK_POOL_SIZE,
                                              **heads)
            mrcnn_mask = PadRowsTo(config.DETECTION_MAX_INSTANCES, name="mrcnn_mask_rows")(
                [mrcnn_mask, detections[..., 4]])
            model = keras.Model([input_image, input_image_meta, input_anchors],
                                [detections, mrcnn_class, mrcnn_bbox, mrcnn_mask, rpn_rois,
                                 rpn_class, rpn_bbox], name="mask_rcnn")
            return weights_io.attach_unused_layers(model, unused_layers, before="fpn_p3")

        active_class_ids = input_image_meta[:, 12:]
        inputs = [input_image, input_image_meta, input_rpn_match, input_rpn_bbox,
                  input_gt_class_ids, input_gt_boxes, input_gt_masks]
        if config.USE_RPN_ROIS:
            target_rois = rpn_rois
        else:
            input_rois = KL.Input(shape=[config.POST_NMS_ROIS_TRAINING, 4], name="input_roi",
                                  dtype="int32")
            inputs.append(input_rois)
            target_rois = NormBoxes(name="norm_input_roi")([input_rois, input_image])
        rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
            config, name="proposal_targets")([target_rois, input_gt_class_ids, gt_boxes,
                                              input_gt_masks])
        mrcnn_class_logits, mrcnn_class, mrcnn_bbox = fpn_classifier_graph(
            rois, pool_size=config.POOL_SIZE, fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE,
            dropout=config.CLASSIFIER_DROPOUT, **heads)
        # Positive ROIs come first, shuffled: the mask head and its loss run on those rows
        # alone, on the first MASK_ROIS_PER_IMAGE of them when that is set.
        num_mask = mask_roi_count(config)
        mask_rois, mask_class_ids, target_mask = LeadingRows(name="positive_rows")(
            [target_class_ids[:, :num_mask], rois[:, :num_mask],
             target_class_ids[:, :num_mask], target_mask])
        mrcnn_mask = build_fpn_mask_graph(mask_rois, pool_size=config.MASK_POOL_SIZE, **heads)
        output_rois = KL.Identity(name="output_rois", **FLOAT32_LAYER)(rois)
        losses = [
            LossLayer(rpn_class_loss_graph, name="rpn_class_loss")([input_rpn_match, rpn_class_logits]),
            LossLayer(lambda *a: rpn_bbox_loss_graph(config, *a), name="rpn_bbox_loss")(
                [input_rpn_bbox, input_rpn_match, rpn_bbox]),
            LossLayer(lambda *a: mrcnn_class_loss_graph(*a, config.CLASS_LABEL_SMOOTHING,
                                                        config.CLASS_FOCAL_GAMMA),
                      name="mrcnn_class_loss")(
                [target_class_ids, mrcnn_class_logits, active_class_ids]),
            LossLayer(mrcnn_bbox_loss_graph, name="mrcnn_bbox_loss")(
                [target_bbox, target_class_ids, mrcnn_bbox]),
            LossLayer(mrcnn_mask_loss_graph, name="mrcnn_mask_loss")(
                [target_mask, mask_class_ids, mrcnn_mask]),
        ]
        outputs = [rpn_class_logits, rpn_class, rpn_bbox, mrcnn_class_logits, mrcnn_class,
                   mrcnn_bbox, mrcnn_mask, rpn_rois, output_rois] + losses
        model = keras.Model(inputs, outputs, name="mask_rcnn")
        return weights_io.attach_unused_layers(model, unused_layers, before="fpn_p3")

    # -- log dir, checkpoints, weights ---------------------------------------------------
    def set_log_dir(self, model_path=None):
        """Set log_dir and checkpoint_path; a checkpoint path of ours resumes its run and epoch.

        A new run is named <name><YYYYmmddTHHMM> after the current minute, or the next minute
        whose folder does not exist yet; make_log_dir() claims the folder when training
        starts. A resumed run stays in the checkpoint's own folder, also when that is not in
        model_dir (Matterport rebuilds the folder's name under model_dir, which could be
        another run's folder of the same minute). Our addition: last_checkpoint, the
        checkpoint this run continues from (None for a new run), then the one train() saved
        last."""
        self.epoch = 0
        self.last_checkpoint = None
        m = model_path and CHECKPOINT_RE.match(os.path.abspath(os.fspath(model_path)))
        self._unclaimed_new_run = not m
        if m:
            self._name_run(datetime.datetime(*(int(g) for g in m.groups()[:5])),
                           folder=os.path.dirname(os.path.abspath(os.fspath(model_path))))
            self.epoch = int(m.group(6))
            self.last_checkpoint = os.fspath(model_path)
            logger.info("Re-starting from epoch %d", self.epoch)
        else:
            self._name_run(datetime.datetime.now())
            while os.path.exists(self.log_dir):
                self._name_run_a_minute_later()

    def _name_run(self, minute, folder=None):
        """log_dir and checkpoint_path of the run started at `minute` (a datetime), in
        `folder` (default: its name under model_dir)."""
        name = self.config.NAME.lower()
        self._run_minute = minute
        self.log_dir = folder or os.path.join(self.model_dir, f"{name}{minute:%Y%m%dT%H%M}")
        self.checkpoint_path = os.path.join(self.log_dir, f"mask_rcnn_{name}_{{epoch:04d}}.h5")

    def _name_run_a_minute_later(self):
        """Move this new run to the next minute's name (its own name is taken)."""
        self._name_run(self._run_minute + datetime.timedelta(minutes=1))

    def make_log_dir(self):
        """Create log_dir (our addition; train() calls it). A new run claims a folder that did
        not exist: os.mkdir is atomic, and a name taken meanwhile (by another run started in
        the same minute in the same model_dir) moves this run to the next minute's name, so
        two runs never write into one folder. A resumed run continues in its own folder."""
        if not self._unclaimed_new_run:
            os.makedirs(self.log_dir, exist_ok=True)
            return
        os.makedirs(self.model_dir, exist_ok=True)
        while True:
            try:
                os.mkdir(self.log_dir)
                break
            except FileExistsError:
                self._name_run_a_minute_later()
        self._unclaimed_new_run = False

    def find_last(self):
        """Path of the newest checkpoint of the newest run of this config's NAME in model_dir."""
        return find_last(self.model_dir, self.config.NAME)

    def load_weights(self, filepath, by_name=False, exclude=None):
        """Load a Keras-2 HDF5 weights file (Matterport's or ours); see weights.py.

        With `exclude` (top-level layer names) by_name is implied. A checkpoint path of ours
        sets the epoch and log dir so that train() resumes where it stopped.
        """
        if exclude:
            by_name = True
        summary = weights_io.load_weights_into(self.keras_model, filepath, by_name=by_name,
                                               exclude=exclude)
        logger.info("Loaded %d layers from %s (%d in the file unused, %d kept initialised)",
                    len(summary["loaded"]), filepath, len(summary["skipped"]),
                    len(summary["missing"]))
        self.set_log_dir(filepath)
        return summary

    def save_weights(self, filepath):
        """Write all weights in Keras-2 HDF5 layout, atomically, with checkpoint_settings (or
        the config) as the file's `settings` attribute."""
        settings = self.checkpoint_settings
        weights_io.save_weights(self.keras_model, filepath,
                                self.config.to_dict() if settings is None else settings)

    def get_imagenet_weights(self):
        """Path of Keras' ImageNet ResNet50 weights: the cached file, else downloaded."""
        cached = os.path.join(os.path.expanduser("~"), ".keras", "models", IMAGENET_FILE)
        if os.path.isfile(cached):
            return cached
        try:
            return keras.utils.get_file(IMAGENET_FILE, IMAGENET_URL, cache_subdir="models",
                                        file_hash="a268eb855778b3df3c7506639542a6af")
        except Exception as exc:
            raise RuntimeError(f"Could not download the ImageNet weights ({exc}). Download "
                               f"{IMAGENET_URL} on a machine with internet and put it at "
                               f"{cached}") from None

    # -- training ------------------------------------------------------------------------
    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Make the layers whose names fully match layer_regex trainable, the others frozen."""
        keras_model = keras_model or self.keras_model
        for layer in keras_model.layers:
            if isinstance(layer, keras.Model):
                if verbose > 0:
                    log(f"In model: {layer.name}")
                self.set_trainable(layer_regex, keras_model=layer, indent=indent + 4,
                                   verbose=verbose)
                continue
            if not layer.weights:
                continue
            trainable = bool(re.fullmatch(layer_regex, layer.name))
            layer.trainable = trainable
            if trainable and verbose > 0:
                log("{}{:20}   ({})".format(" " * indent, layer.name, layer.__class__.__name__))

    def get_trainable_layers(self):
        """Layers that hold weights (the rpn_model's inner layers included)."""
        out = []
        for layer in self.keras_model.layers:
            out += [sub for sub in (layer.layers if isinstance(layer, keras.Model) else [layer])
                    if sub.weights]
        return out

    def _l2_variables(self):
        return [v for v in self.keras_model.trainable_variables
                if "gamma" not in v.path and "beta" not in v.path]

    def make_optimizer(self, learning_rate):
        """The optimizer of train(), built for the weights trainable now: SGD with
        config.LEARNING_MOMENTUM and per-tensor clipping at config.GRADIENT_CLIP_NORM, as
        Matterport's (mrcnn/optimizer.py). `learning_rate`: a float or a schedule."""
        optimizer = MomentumSGD(learning_rate, momentum=self.config.LEARNING_MOMENTUM,
                                clipnorm=self.config.GRADIENT_CLIP_NORM)
        optimizer.build(self.keras_model.trainable_variables)
        return optimizer

    def _make_steps(self, optimizer):
        """tf.functions: train_step(batch) and eval_step(batch) -> (total, [5 losses])."""
        config, model = self.config, self.keras_model
        trainable = model.trainable_variables
        l2_vars = self._l2_variables()
        penalty = l2_penalty(config.WEIGHT_DECAY, config.WEIGHT_DECAY_MODE)
        loss_weights = [float(config.LOSS_WEIGHTS.get(n, 1.)) for n in LOSS_NAMES]

        def total_loss(batch, training):
            outputs = model(list(batch), training=training)
            losses = [tf.reduce_mean(x) for x in outputs[-5:]]
            total = tf.add_n([w * x for w, x in zip(loss_weights, losses)])
            if l2_vars:
                total += penalty(l2_vars)
            return total, losses

        @tf.function(reduce_retracing=True)
        def train_step(batch):
            with tf.GradientTape() as tape:
                total, losses = total_loss(batch, True)
            grads = tape.gradient(total, trainable)
            pairs = [(g, v) for g, v in zip(grads, trainable) if g is not None]
            optimizer.apply_gradients(pairs)
            return total, losses

        @tf.function(reduce_retracing=True)
        def eval_step(batch):
            return total_loss(batch, False)

        return train_step, eval_step

    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
              augmentation=None, custom_callbacks=None, no_augmentation_sources=None,
              seed=None, progress=True, sample_weights=None):
        """Train from self.epoch up to `epochs` (absolute) on the layers named by `layers`
        (heads, 3+, 4+, 5+, all, or a regex). Each epoch ends with validation losses, a
        checkpoint, TensorBoard scalars and a row of <log_dir>/losses.csv.
        Returns the history: one dict of losses per epoch trained.
        Our additions: `sample_weights` (per image id) draws training images in proportion
        to them (e.g. to see rare classes more often); config.LEARNING_RATE_SCHEDULE and
        LEARNING_RATE_WARMUP_STEPS shape the rate (schedule.py); a callback may move the
        last epoch while training runs (set_last_epoch).
        """
        if self.mode != "training":
            raise RuntimeError("Create model in training mode.")
        config = self.config
        layers = LAYER_REGEX.get(layers, layers)
        train_input = TrainingInput(train_dataset, config, augmentation=augmentation,
                                    shuffle=True, seed=seed, sample_weights=sample_weights)
        val_input = TrainingInput(val_dataset, config, shuffle=True, seed=seed)
        self.make_log_dir()
        logger.info("Starting at epoch %d. LR=%s", self.epoch, learning_rate)
        logger.info("Checkpoint Path: %s", self.checkpoint_path)
        self.set_trainable(layers, verbose=0)
        rate = schedule.learning_rate(config, learning_rate,
                                      first_step=self.epoch * config.STEPS_PER_EPOCH,
                                      total_steps=epochs * config.STEPS_PER_EPOCH)
        self.last_epoch, self._rate = epochs, rate
        optimizer = self.make_optimizer(rate)
        train_step, eval_step = self._make_steps(optimizer)
        callbacks = keras.callbacks.CallbackList(custom_callbacks or [], model=self.keras_model)
        self.keras_model.stop_training = False
        writer = tf.summary.create_file_writer(self.log_dir)
        train_iter = train_input.batches()
        val_iter = val_input.batches()
        history = []
        callbacks.on_train_begin()
        try:
            while self.epoch < self.last_epoch and not self.keras_model.stop_training:
                started = time.time()
                callbacks.on_epoch_begin(self.epoch)
                logs = self._run_epoch(train_step, train_iter, config.STEPS_PER_EPOCH, callbacks,
                                       f"Epoch {self.epoch + 1}/{self.last_epoch}", progress)
                if not self.keras_model.stop_training:
                    val = self._run_epoch(eval_step, val_iter, config.VALIDATION_STEPS, None,
                                          None, False)
                    logs.update({"val_" + k: v for k, v in val.items()})
                logs.update(lr=float(optimizer.learning_rate),
                            seconds=round(time.time() - started, 2))
                # A stopped epoch (time limit, Ctrl-C) is saved and counted as done, so that
                # nothing trained is lost and a resumed run continues at the next epoch.
                self.epoch += 1
                checkpoint = self.checkpoint_path.format(epoch=self.epoch)
                self.save_weights(checkpoint)
                self.last_checkpoint = checkpoint
                self._write_epoch_logs(writer, logs)
                history.append(dict(epoch=self.epoch, **logs))
                callbacks.on_epoch_end(self.epoch - 1, logs)
        finally:
            train_iter.close()
            val_iter.close()
            writer.close()
        callbacks.on_train_end()
        return history

    def set_last_epoch(self, epochs):
        """During train(): end it after epoch `epochs` (absolute; at least the epoch being
        finished) instead of the one it was called with. A cosine rate is stretched or
        squeezed from the next step on so that it still reaches 0 at the new last step."""
        self.last_epoch = max(int(epochs), self.epoch)
        if isinstance(self._rate, schedule.WarmupSchedule):
            self._rate.set_total_steps(self.last_epoch * self.config.STEPS_PER_EPOCH)

    def _run_epoch(self, step_fn, batches, steps, callbacks, desc, progress):
        """Run `steps` batches through step_fn; returns the mean of each loss."""
        from tqdm import tqdm
        sums = dict.fromkeys(["loss"] + LOSS_NAMES, 0.)
        bar = tqdm(range(steps), desc=desc, file=sys.stderr, disable=not progress,
                   dynamic_ncols=True, leave=True)
        done = 0
        for i in bar:
            total, losses = step_fn(tuple(tf.constant(x) for x in next(batches)))
            values = [float(total)] + [float(x) for x in losses]
            if not all(math.isfinite(v) for v in values):
                raise FloatingPointError(
                    "the training loss became NaN or infinite (" + ", ".join(
                        f"{k}={v}" for k, v in zip(sums, values)) + "). Likely causes: a "
                    "learning rate too high, empty or broken masks, boxes of zero size. The "
                    "last good checkpoint is kept.")
            for k, v in zip(sums, values):
                sums[k] += v
            done = i + 1
            means = {k: v / done for k, v in sums.items()}
            bar.set_postfix({k.replace("_loss", ""): f"{v:.3f}" for k, v in means.items()},
                            refresh=False)
            if callbacks is not None:
                callbacks.on_train_batch_end(i, means)
                if self.keras_model.stop_training:
                    break
        bar.close()
        return {k: v / max(done, 1) for k, v in sums.items()}

    def _write_epoch_logs(self, writer, logs):
        with writer.as_default():
            for key, value in logs.items():
                tf.summary.scalar(key, value, step=self.epoch)
        writer.flush()
        path = os.path.join(self.log_dir, "losses.csv")
        rows = []
        if os.path.isfile(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < self.epoch]
        rows.append(dict(epoch=self.epoch, **{k: f"{v:.6g}" for k, v in logs.items()}))
        with durable.replacing(path, newline="") as f:
            fields = list(dict.fromkeys(k for row in rows for k in row))
            out = csv.DictWriter(f, fieldnames=fields, restval="")
            out.writeheader()
            out.writerows(rows)

    # -- inference -----------------------------------------------------------------------
    def get_anchors(self, image_shape):
        """Normalized pyramid anchors [A, 4] for a molded image shape; sets self.anchors
        (pixels)."""
        from mrcnn.data import get_anchors_pixels
        key = tuple(int(v) for v in image_shape[:2])
        if key not in self._anchor_cache:
            self.anchors = get_anchors_pixels(self.config, image_shape)
            self._anchor_cache[key] = utils.norm_boxes(self.anchors, key)
        return self._anchor_cache[key]

    def mold_inputs(self, images):
        """RGB images (list of [H, W, 3]) -> molded [B, H', W', 3], metas [B, M], windows [B, 4]."""
        molded, metas, windows = [], [], []
        for image in images:
            resized, window, scale, _, _ = utils.resize_image(
                normalize_colors(image, self.config.COLOR_NORMALIZATION),
                min_dim=self.config.IMAGE_MIN_DIM, min_scale=self.config.IMAGE_MIN_SCALE,
                max_dim=self.config.IMAGE_MAX_DIM, mode=self.config.IMAGE_RESIZE_MODE)
            molded.append(mold_image(resized, self.config))
            metas.append(compose_image_meta(0, image.shape, resized.shape, window, scale,
                                            np.zeros([self.config.NUM_CLASSES], np.int32)))
            windows.append(window)
        return np.stack(molded), np.stack(metas), np.array(windows)

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape, image_shape,
                          window):
        """One image's detections [DMI, 6] and masks [DMI, 28, 28, NC] -> boxes int32 [N, 4]
        (original pixels), class_ids int32 [N], scores float32 [N], masks bool [H, W, N]."""
        zero = np.where(detections[:, 4] == 0)[0]
        n = zero[0] if zero.shape[0] > 0 else detections.shape[0]
        boxes = detections[:n, :4]
        class_ids = detections[:n, 4].astype(np.int32)
        scores = detections[:n, 5].astype(np.float32)
        masks = mrcnn_mask[np.arange(n), :, :, class_ids]
        window = utils.norm_boxes(window, image_shape[:2])
        wy1, wx1, wy2, wx2 = window
        boxes = (boxes - np.array([wy1, wx1, wy1, wx1])) / np.array(
            [wy2 - wy1, wx2 - wx1, wy2 - wy1, wx2 - wx1])
        boxes = utils.denorm_boxes(boxes, original_image_shape[:2])
        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], masks[keep]
        full = [utils.unmold_mask(m, b, original_image_shape) for m, b in zip(masks, boxes)]
        full = (np.stack(full, axis=-1) if full
                else np.zeros(tuple(original_image_shape[:2]) + (0,), bool))
        return boxes.astype(np.int32), class_ids, scores, full

    def _predict(self, molded, metas, anchors):
        if self._predict_fn is None:
            model = self.keras_model

            @tf.function(reduce_retracing=True)
            def predict(images, image_metas, image_anchors):
                return model([images, image_metas, image_anchors], training=False)
            self._predict_fn = predict
        outputs = self._predict_fn(tf.constant(molded, tf.float32), tf.constant(metas, tf.float32),
                                   tf.constant(anchors, tf.float32))
        return [o.numpy() for o in outputs]

    def detect(self, images, verbose=0):
        """Detect instances in a list of BATCH_SIZE RGB images.

        Returns one dict per image: rois int32 [N, 4] (y1, x1, y2, x2 pixels of the original
        image), class_ids int32 [N], scores float32 [N], masks bool [H, W, N].
        """
        if self.mode != "inference":
            raise RuntimeError("Create model in inference mode.")
        if len(images) != self.config.BATCH_SIZE:
            raise ValueError("len(images) must be equal to BATCH_SIZE")
        if verbose:
            log(f"Processing {len(images)} images")
            for image in images:
                log("image", image)
        molded, metas, windows = self.mold_inputs(images)
        if len({m.shape for m in molded}) != 1:
            raise ValueError("After resizing, all images must have the same size.")
        return self._detect(molded, metas, [im.shape for im in images], windows, verbose)

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Detect on images already molded (e.g. from load_image_gt + mold_image); results are
        in molded-image coordinates."""
        if self.mode != "inference":
            raise RuntimeError("Create model in inference mode.")
        if len(molded_images) != self.config.BATCH_SIZE:
            raise ValueError("Number of images must be equal to BATCH_SIZE")
        shape = molded_images[0].shape
        windows = [(0, 0, shape[0], shape[1])] * len(molded_images)
        return self._detect(np.asarray(molded_images), np.asarray(image_metas),
                            [shape] * len(molded_images), windows, verbose)

    def _detect(self, molded, metas, original_shapes, windows, verbose):
        anchors = self.get_anchors(molded[0].shape)
        anchors = np.broadcast_to(anchors, (len(molded),) + anchors.shape)
        if verbose:
            log("molded_images", molded)
            log("image_metas", metas)
            log("anchors", anchors)
        detections, _, _, mrcnn_mask, _, _, _ = self._predict(molded, metas, anchors)
        results = []
        for i, shape in enumerate(original_shapes):
            rois, class_ids, scores, masks = self.unmold_detections(
                detections[i], mrcnn_mask[i], shape, molded[i].shape, windows[i])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                            "masks": masks})
        return results
