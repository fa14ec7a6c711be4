"""Mask R-CNN configuration: Matterport's attribute names, defaults and meanings.

Subclass `Config`, override the class attributes you need (at least NAME and NUM_CLASSES),
then instantiate it: `__init__` computes the derived values BATCH_SIZE, IMAGE_SHAPE and
IMAGE_META_SIZE. As in Matterport, derived values are not recomputed when an attribute is
assigned after construction; call `refresh()` (our addition) if you do that.
"""
import numpy as np

COLOR_NORMALIZATIONS = ("none", "per-image")    # values of Config.COLOR_NORMALIZATION


def check_color_normalization(mode):
    """Raise ValueError unless `mode` is one of COLOR_NORMALIZATIONS."""
    if mode not in COLOR_NORMALIZATIONS:
        raise ValueError(f"COLOR_NORMALIZATION={mode!r}: use one of {COLOR_NORMALIZATIONS}")


class Config:
    """Base configuration. All sizes are pixels unless stated otherwise."""

    NAME = None                 # experiment name; lower-cased in log dirs and checkpoint names
    GPU_COUNT = 1               # kept for compatibility; this library runs one replica
    IMAGES_PER_GPU = 2          # images per step
    STEPS_PER_EPOCH = 1000      # training steps per epoch
    VALIDATION_STEPS = 50       # validation batches at the end of each epoch

    BACKBONE = "resnet101"      # "resnet50", "resnet101" or a callable like resnet_graph
    COMPUTE_BACKBONE_SHAPE = None   # callable(image_shape) -> [levels, 2]; with a callable BACKBONE
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]   # strides of P2..P6
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024       # width of the two "FC" layers of the classifier head
    TOP_DOWN_PYRAMID_SIZE = 256             # FPN channels
    # Our addition: 2 = Matterport (RPN, anchors and ROIAlign on P2..P6); 3 = start at P3,
    # skipping P2 and the first anchor scale (about a third of the compute; for objects larger
    # than about 48 px). The weights file layout is the same either way.
    PYRAMID_MIN_LEVEL = 2

    NUM_CLASSES = 1             # including background

    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)   # anchor side per level P2..P6
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]               # width / height
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)  # (height, width)

    IMAGE_RESIZE_MODE = "square"    # none | square | pad64 | crop
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])    # RGB mean subtracted from the input
    # Our addition (off = Matterport): "per-image" standardises each image's colour channels
    # before resizing, in training and inference alike (mrcnn.np_images.normalize_colors).
    COLOR_NORMALIZATION = "none"

    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    # Our addition (None = Matterport: every positive ROI): in training the mask head runs on
    # at most this many positive ROIs per image, a random sample (positives are shuffled).
    MASK_ROIS_PER_IMAGE = None
    POOL_SIZE = 7
    # Our addition (224 = Matterport, the FPN paper's k0 = 4 at 224 px): an ROI of this size
    # (sqrt(h * w), pixels of the molded image) is pooled from P4, one of half the size from
    # P3, one of twice the size from P5.
    ROI_CANONICAL_SIZE = 224
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]       # fixed by the mask head's architecture
    MAX_GT_INSTANCES = 100
    # Our addition (off = Matterport): add the GT boxes to the training proposals, as
    # torchvision does, so the heads see positive ROIs from the first step.
    PROPOSALS_INCLUDE_GT = False

    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7  # falsy (0 / None) disables the score filter
    DETECTION_NMS_THRESHOLD = 0.3
    # Our addition (False = Matterport: one detection per ROI, of its most probable class).
    # True: one per (ROI, class) whose probability reaches DETECTION_MIN_CONFIDENCE, as
    # torchvision and Detectron2 do; at a threshold above 0.5 the same detections.
    DETECTION_PER_CLASS = False

    LEARNING_RATE = 0.001       # users pass it to train(); train() itself does not read it
    LEARNING_RATE_SCHEDULE = "constant"     # our addition: "constant" or "cosine" (schedule.py)
    LEARNING_RATE_WARMUP_STEPS = 0          # our addition: linear ramp over the first steps
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    # Our addition. "matterport": the loss gains WEIGHT_DECAY * sum(w^2) / size(w) per weight
    # tensor, Matterport's term: a weight shrinks by lr * 2 * WEIGHT_DECAY / size(w) of itself
    # per step, lr * 1.6e-11 in the 12.8 M-weight first classifier layer. "sgd":
    # (WEIGHT_DECAY / 2) * sum(w^2): every weight shrinks by lr * WEIGHT_DECAY of itself per
    # step, as with torchvision's SGD(weight_decay=...).
    WEIGHT_DECAY_MODE = "matterport"
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.,
    }
    # Our addition (0 = Matterport): label smoothing of the classifier's cross-entropy.
    CLASS_LABEL_SMOOTHING = 0.0
    # Our addition (0 = Matterport): focal loss exponent of the classifier's cross-entropy.
    CLASS_FOCAL_GAMMA = 0.0
    # Our addition (0 = Matterport): dropout after each of the classifier head's two FC layers.
    CLASSIFIER_DROPOUT = 0.0
    USE_RPN_ROIS = True
    TRAIN_BN = False            # False: frozen BN; True: always batch stats; None: follow training
    GRADIENT_CLIP_NORM = 5.0    # per-tensor gradient norm clip (Keras `clipnorm`)
    # Our addition: "float32", "bfloat16" (convolutions in bfloat16, weights float32), or
    # "auto" = bfloat16 on CPUs with native bfloat16 arithmetic (AVX512_BF16, AMX), else float32.
    COMPUTE_DTYPE = "auto"

    def __init__(self):
        self.refresh()

    def refresh(self):
        """Recompute BATCH_SIZE, IMAGE_SHAPE and IMAGE_META_SIZE from the current attributes;
        refuse an unknown COLOR_NORMALIZATION."""
        check_color_normalization(self.COLOR_NORMALIZATION)
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        side = self.IMAGE_MIN_DIM if self.IMAGE_RESIZE_MODE == "crop" else self.IMAGE_MAX_DIM
        self.IMAGE_SHAPE = np.array([side, side, self.IMAGE_CHANNEL_COUNT])
        # image_id(1) + original shape(3) + molded shape(3) + window(4) + scale(1) + active ids
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES

    def to_dict(self):
        """Upper-case, non-callable attributes as a dict (arrays become lists)."""
        out = {}
        for name in dir(self):
            value = getattr(self, name)
            if name.startswith("__") or not name.isupper() or callable(value):
                continue
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def display(self):
        """Print every configuration value, one per line, as Matterport does."""
        print("\nConfigurations:")
        for name in dir(self):
            value = getattr(self, name)
            if not name.startswith("__") and not callable(value):
                print("{:30} {}".format(name, value))
        print("\n")
