#!/usr/bin/env python3
"""WBC: find, outline and name white blood cells in blood-smear images with Mask R-CNN.

    python3 WBC.py demo                                       # the whole flow on synthetic data
    python3 WBC.py train    --dataset=WBC --weights=coco      # or imagenet | last | none | PATH
    python3 WBC.py evaluate --dataset=WBC --weights=last
    python3 WBC.py detect   --image=x.png                     # or --images=DIR
    python3 WBC.py check    --dataset=WBC
    python3 WBC.py import-lisc --source="LISC Database" --out=WBC
    python3 WBC.py synth    --out=WBC-synth

Run `python3 WBC.py COMMAND --help` for each command's flags and an example. Bad input is
reported as one line and exit code 2.
"""
import argparse
import collections
import hashlib
import logging
import math
import os
import re
import shlex
import sys
import time

from mrcnn.config import COLOR_NORMALIZATIONS, Config
from wbc.dataset import (CLASS_NAMES, WBCDataset,  # noqa: F401  (WBCDataset: WBC.py's API)
                         match_class, mix_in_entries)
from wbc.errors import UserError
from wbc.files import (is_disk_full, is_temp_name, read_json, remove_stale_temp_files,
                       write_error_message, write_json)
from wbc.tta import VIEWS, MergedModel

ROOT = os.path.dirname(os.path.abspath(__file__))
# Matterport's COCO file, in the project root (WBC_COCO_WEIGHTS overrides, e.g. a shared copy).
COCO_WEIGHTS_PATH = os.environ.get("WBC_COCO_WEIGHTS", os.path.join(ROOT, "mask_rcnn_coco.h5"))
COCO_EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
DEFAULT_LOGS = "logs"
EVAL_MIN_SCORE = 0.05   # detections kept for AP in evaluate
# Detections per image kept for AP in evaluate (by each model of an ensemble or view of --tta):
# COCO's maxDets, as torchvision keeps. Down to EVAL_MIN_SCORE a region can give one per class,
# and a run's own cap of 20 (detect's) was full on every image of four cells, dropping
# low-score detections that AP ranks (README, evaluate).
EVAL_MAX_DETECTIONS = 100


class WBCConfig(Config):
    """Defaults for white blood cells on a CPU; every one a flag or config.json can override.

    The training recipe (README, "Accuracy from scratch") was measured on wbc-zheng2018:
    frozen BatchNorm, 32 sampled ROIs per image, the classifier loss weighted 3, warm-up
    then cosine, rare classes drawn more often. `SCRATCH_RECIPE` adds what only suits
    training from random weights."""
    NAME = "WBC"
    NUM_CLASSES = 1 + 5
    BACKBONE = "resnet50"
    PYRAMID_MIN_LEVEL = 3       # cells are 60-200 px: P2 and 32 px anchors only cost time
    CLASS_BALANCE = 0.5         # draw images by (class count) ** -CLASS_BALANCE; 0 = uniform
    IMAGES_PER_GPU = 1
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    STEPS_PER_EPOCH = 200       # 75 epochs: 15,000 steps, the measured recipe's length
    VALIDATION_STEPS = 15
    # Batch statistics of one image are not those of the moving averages used at inference:
    # with TRAIN_BN=None the model scored mask AP 0.15 where frozen BN scored 0.30 (README).
    TRAIN_BN = False
    PROPOSALS_INCLUDE_GT = True
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128
    POST_NMS_ROIS_TRAINING = 1000
    POST_NMS_ROIS_INFERENCE = 500
    # One or two cells per image give at most ~10 positive ROIs: 32 ROIs keep the classifier's
    # loss about a third positives instead of a tenth (the rest being zero-padded rows).
    TRAIN_ROIS_PER_IMAGE = 32
    LOSS_WEIGHTS = dict(Config.LOSS_WEIGHTS, mrcnn_class_loss=3.)
    MAX_GT_INSTANCES = 20
    DETECTION_MAX_INSTANCES = 20
    DETECTION_MIN_CONFIDENCE = 0.7
    # One detection per (region, class), as torchvision does: on six trained models mask AP
    # rose by 0.025-0.078 and AP50 by 0.030-0.099, the detections at 0.7 unchanged (README).
    DETECTION_PER_CLASS = True
    LEARNING_RATE = 0.001
    LEARNING_RATE_SCHEDULE = "cosine"
    LEARNING_RATE_WARMUP_STEPS = 200
    AUGMENTATION = "default"    # --augment: none|default|strong|restyle (augmentation() below)


# What `train --weights=none` uses unless flags say otherwise: from random weights, ResNet-50
# scored about 40% lower mask AP than the small backbone in the same time, and 0.0025 beat
# 0.005 on two seeds at 320 px, where 0.005 once diverged (README).
SCRATCH_RECIPE = {"BACKBONE": "small", "LEARNING_RATE": 0.0025}

# --weights values that name no file of ours: random, Matterport's COCO, Keras' ImageNet.
BUILTIN_WEIGHTS = ("none", "coco", "imagenet")

PYRAMID_LEVELS = {"p2": 2, "p3": 3}     # --pyramid -> PYRAMID_MIN_LEVEL

# Config attributes saved with a run (config.json) and restored when its weights are used.
SAVED_CONFIG_KEYS = ["LAYERS", "BACKBONE", "PYRAMID_MIN_LEVEL", "LEARNING_RATE_SCHEDULE",
                     "LEARNING_RATE_WARMUP_STEPS", "CLASS_BALANCE", "IMAGE_RESIZE_MODE",
                     "IMAGE_MIN_DIM", "IMAGE_MAX_DIM",
                     "NUM_CLASSES", "RPN_ANCHOR_SCALES", "RPN_ANCHOR_RATIOS", "TRAIN_BN",
                     "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE", "MEAN_PIXEL",
                     "POST_NMS_ROIS_INFERENCE", "DETECTION_MAX_INSTANCES",
                     "DETECTION_MIN_CONFIDENCE", "DETECTION_NMS_THRESHOLD", "RPN_NMS_THRESHOLD",
                     "LEARNING_RATE", "TRAIN_ROIS_PER_IMAGE", "LOSS_WEIGHTS", "COLOR_NORMALIZATION",
                     "WEIGHT_DECAY", "WEIGHT_DECAY_MODE", "CLASS_LABEL_SMOOTHING",
                     "ROI_CANONICAL_SIZE", "CLASSIFIER_DROPOUT", "CLASS_FOCAL_GAMMA",
                     "STEPS_PER_EPOCH", "VALIDATION_STEPS", "AUGMENTATION",
                     "MASK_ROIS_PER_IMAGE"]


def make_config(base=WBCConfig, given=None, **flags):
    """An instance of a subclass of `base`: `given` values (a saved run's config, a recipe)
    apply as they are, then `flags` on top, where None means "flag not given"."""
    import numpy as np
    values = dict(given or {})
    values.update({k: v for k, v in flags.items() if v is not None})
    if "MEAN_PIXEL" in values:
        values["MEAN_PIXEL"] = np.array(values["MEAN_PIXEL"])
    return type(base.__name__, (base,), values)()


def saved_config(weights_path):
    """Config values of the run that wrote a checkpoint: config.json beside it, else the
    copy inside the checkpoint (a file moved away from its run folder), else {}."""
    stored = read_json(os.path.join(os.path.dirname(os.path.abspath(weights_path)),
                                    "config.json"))
    if not isinstance(stored, dict):
        quiet_tensorflow()      # mrcnn.weights imports Keras, hence TensorFlow
        from mrcnn.weights import read_settings
        stored = read_settings(weights_path) or {}
    return {k: (tuple(v) if k == "RPN_ANCHOR_SCALES" else v) for k, v in stored.items()
            if k in SAVED_CONFIG_KEYS}


# ----------------------------------------------------------------------------- helpers
def parse_duration(text, flag="--time-limit"):
    """'8h', '90m', '1h30m', '45s' or plain seconds -> seconds (float); `flag` names the
    flag in the error."""
    number = r"(\d+(?:\.\d+)?)"
    m = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text or "")
    if not text or not m or not any(m.groups()):
        raise UserError(f"{flag}={text!r}: not a duration. Use e.g. 8h, 90m, 1h30m or 600s")
    h, mi, s = (float(g) if g else 0. for g in m.groups())
    return h * 3600 + mi * 60 + s


def set_threads(threads):
    """Use `threads` CPU threads in TensorFlow (default: all cores)."""
    quiet_tensorflow()
    import tensorflow as tf
    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError:
        # TensorFlow already runs in this process (a command called in-process after others,
        # as the demo and tests do): its thread pools are fixed; keep them.
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    return threads


def quiet_tensorflow():
    """Import TensorFlow without its start-up chatter (absl and oneDNN notices on stderr,
    which TF_CPP_MIN_LOG_LEVEL does not silence): stderr is muted during the import only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def image_size_config(size):
    if size is None:
        return {}
    if size < 128 or size % 64:
        raise UserError(f"--image-size={size}: must be a multiple of 64 and at least 128 "
                        "(e.g. 384, 512, 768)")
    return {"IMAGE_MIN_DIM": size, "IMAGE_MAX_DIM": size}


def load_subset(dataset_dir, subset, exclude=(), extra=()):
    data = WBCDataset()
    data.load_wbc(dataset_dir, subset, exclude=exclude, extra=extra)
    data.prepare()
    return data


MixIn = collections.namedtuple("MixIn", "folder counts text")
MixIn.__doc__ = """A --mix-in flag: counts {class name: images} of folder/train, as typed."""


def mix_in_flag(text):
    """An argparse type for --mix-in=DIR:CLASS=N[,CLASS=N...] -> MixIn."""
    example = "e.g. WBC-cells:Basophil=20 or WBC-cells:Basophil=20,Eosinophil=10"
    folder, _, spec = text.rpartition(":")
    if not folder or "=" not in spec:
        raise argparse.ArgumentTypeError(f"{text!r} is not DIR:CLASS=N ({example})")
    counts = {}
    for part in spec.split(","):
        name, _, number_text = part.partition("=")
        cls = match_class(name)
        if cls is None:
            raise argparse.ArgumentTypeError(
                f"{name!r} in {text!r} is not a class ({', '.join(CLASS_NAMES)})")
        try:
            count = number(int, 1)(number_text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(
                f"{part!r} in {text!r}: give the number of images ({exc}; {example})") from None
        if cls in counts:
            raise argparse.ArgumentTypeError(f"{cls} given twice in {text!r}")
        counts[cls] = count
    return MixIn(folder, counts, text)


def mix_in_pairs(mix_ins):
    """The image/mask pairs the --mix-in flags add to the training set, with one line printed
    per flag, e.g. `Mixed into train: 20 Basophil (synth_00004 ... synth_00124) of
    WBC-cells/train`. UserError when a folder is given twice."""
    folders = [os.path.realpath(mix.folder) for mix in mix_ins]
    for i, folder in enumerate(folders):
        if folder in folders[:i]:
            raise UserError(f"--mix-in={mix_ins[i].text}: {mix_ins[i].folder} is given twice. "
                            "Give each folder once, with its classes as CLASS=N,CLASS=N")
    pairs = []
    for mix in mix_ins:
        entries = mix_in_entries(mix.folder, mix.counts)
        parts = []
        for cls, n in mix.counts.items():
            stems = [e["stem"] for e in entries if e["class_name"] == cls]
            parts.append(f"{n} {cls} ({stems[0]}{f' ... {stems[-1]}' if n > 1 else ''})")
        print(f"Mixed into train: {', '.join(parts)} of {os.path.join(mix.folder, 'train')}")
        pairs += entries
    return pairs


def mix_in_record(mix_ins):
    """The --mix-in flags in a normal form, as recorded with a run (MIX_IN): one
    REAL_DIR:CLASS=N,... text per flag (the folder with links resolved, as the "given twice"
    check sees it), classes and flags sorted, so flags that add the same images give the same
    record."""
    return sorted(f"{os.path.realpath(mix.folder)}:"
                  + ",".join(f"{cls}={n}" for cls, n in sorted(mix.counts.items()))
                  for mix in mix_ins)


def same_images(record):
    """A MIX_IN record with its folders' links resolved, sorted, for comparing records:
    checkpoints saved before the record resolved links kept the folder as given."""
    def resolved(text):
        folder, _, counts = text.rpartition(":")
        return f"{os.path.realpath(folder)}:{counts}"
    return sorted(map(resolved, record))


def mix_in_change(recorded, given):
    """The warning for a run continued with other --mix-in flags than its checkpoint was
    trained with, else None. recorded: the checkpoint's MIX_IN (None for a checkpoint from
    before it was recorded: no warning); given: mix_in_record of this command's flags."""
    if recorded is None or same_images(recorded) == same_images(given):
        return None

    def flags(texts):
        return " ".join(f"--mix-in={shlex.quote(t)}" for t in texts) or "no --mix-in"
    keep = f"give {flags(recorded)}" if recorded else "leave out --mix-in"
    return (f"Warning: the checkpoint this run continues from was trained with "
            f"{flags(recorded)}; this command gives {flags(given)}, so it trains on other "
            f"images. To train on the same, {keep}")


def class_balance_weights(dataset, power):
    """Per-image sampling weights (count of the image's class) ** -power, or None for 0:
    0.5 draws a class of n images in proportion to sqrt(n) instead of n."""
    if not power:
        return None
    names = [info["class_name"] for info in dataset.image_info]
    counts = collections.Counter(names)
    return [counts[name] ** -float(power) for name in names]


AUGMENTATIONS = ("none", "default", "strong", "restyle")


def augmentation(kind, train_set=None, config=None):
    """albumentations pipeline for --augment (keeps the image size), or None for "none".

    default: flips, 90-degree turns, brightness/contrast, hue/saturation. strong: default plus
    scale/rotation, blur and RGB shifts. restyle: default plus, for half the images, each
    colour channel's histogram matched to a random image of `train_set` (resized as `config`
    says), blended 50-100%: one source's stain and lamp shown in another's colours, the
    granules and nuclei kept (docs/zheng_restyle.jpg).
    """
    if kind == "none":
        return None
    # albumentations asks PyPI for a newer release on import (2 s timeout, a warning when
    # offline): training must not touch the network.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    ops = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
           A.RandomBrightnessContrast(0.1, 0.1, p=0.5),
           A.HueSaturationValue(8, 12, 8, p=0.5)]
    if kind == "strong":
        ops += [A.Affine(scale=(0.8, 1.2), rotate=(-30, 30), p=0.5),
                A.GaussianBlur(blur_limit=(3, 5), p=0.2),
                A.RGBShift(12, 12, 12, p=0.3)]
    if kind == "restyle":
        from mrcnn.data import ResizedImages
        return WithReferenceImages(A.Compose([A.HistogramMatching(p=0.5)] + ops),
                                   ResizedImages(train_set, config))
    return A.Compose(ops)


class WithReferenceImages:
    """An albumentations pipeline called with `hm_metadata=images` (a sequence of uint8
    [H, W, 3]), from which its HistogramMatching draws one reference image per call."""

    def __init__(self, pipeline, images):
        self.pipeline, self.images = pipeline, images

    def __call__(self, **data):
        return self.pipeline(**data, hm_metadata=self.images)


def resolve_weights(model, spec, logs, for_training):
    """Load the weights named by --weights into model; returns a description."""
    from mrcnn import utils
    from mrcnn.weights import WeightsFileError
    if spec == "none":
        return "random initialisation"
    if spec in ("coco", "imagenet") and not for_training:
        what = {"coco": "COCO weights know no white cells",
                "imagenet": "ImageNet weights hold a backbone only, no detector"}[spec]
        raise UserError(f"--weights={spec}: {what}; use the weights of a WBC training run "
                        "(--weights=last or a .h5 path)")
    try:
        if spec == "coco":
            if not os.path.isfile(COCO_WEIGHTS_PATH):
                print(f"Downloading Matterport's COCO weights to {COCO_WEIGHTS_PATH} ...")
                try:
                    utils.download_trained_weights(COCO_WEIGHTS_PATH)
                except Exception as exc:
                    raise UserError(f"{COCO_WEIGHTS_PATH}: missing and the download failed "
                                    f"({exc}). Download {utils.COCO_MODEL_URL} elsewhere and "
                                    "put it there, or use --weights=imagenet|none") from None
            model.load_weights(COCO_WEIGHTS_PATH, by_name=True, exclude=COCO_EXCLUDE)
            return f"COCO ({COCO_WEIGHTS_PATH}, class layers re-initialised)"
        if spec == "imagenet":
            try:
                path = model.get_imagenet_weights()
            except RuntimeError as exc:
                raise UserError(str(exc)) from None
            model.load_weights(path, by_name=True)
            return f"ImageNet ResNet50 ({path})"
        path = find_last_checkpoint(logs) if spec == "last" else spec
        if not os.path.isfile(path):
            raise UserError(f"--weights={spec}: file not found. Give a .h5 path, or "
                            "last|coco|imagenet|none")
        model.load_weights(path, by_name=True)
        return path
    except WeightsFileError as exc:
        raise UserError(f"{exc}") from None


def find_last_checkpoint(logs):
    """Newest WBC checkpoint under logs, as a path string; UserError if there is none."""
    quiet_tensorflow()
    from mrcnn.model import find_last
    try:
        return str(find_last(logs, WBCConfig.NAME))
    except FileNotFoundError:
        raise UserError(f"--weights=last: no checkpoint of a WBC run under {logs}/. Train "
                        "first (python3 WBC.py train ...) or give --weights=PATH or --logs=DIR"
                        ) from None


def weights_config(spec, logs):
    """Config values of the run the weights come from (config.json beside them)."""
    if spec == "last":
        try:
            return saved_config(find_last_checkpoint(logs))
        except UserError:
            return {}
    if spec not in BUILTIN_WEIGHTS and os.path.isfile(spec):
        return saved_config(spec)
    return {}


# ----------------------------------------------------------------------------- train
class Callback:
    """The Keras callback protocol with every hook a no-op (Keras itself is imported late)."""
    model = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        pass

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


class StopControl(Callback):
    """Stops training at a time limit or on SIGINT / SIGTERM (after the current step).

    `cut_short` tells whether the stop ended an epoch before its last step (the epoch is
    saved and counted as done all the same) or came during validation, after all its steps.
    """

    def __init__(self, steps_per_epoch, time_limit_s=None):
        self.steps_per_epoch = steps_per_epoch
        self.deadline = time.time() + time_limit_s if time_limit_s else None
        self.reason = None
        self.cut_short = False

    def request_stop(self, reason):
        """Ask for a stop; it takes effect at the end of the current (or first) step."""
        self.reason = self.reason or reason

    def on_train_batch_end(self, batch, logs=None):
        self._stop_if_asked()
        self.cut_short = self.model.stop_training and batch + 1 < self.steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        """A stop asked for during validation ends training with the epoch just saved,
        instead of one step into the next."""
        self._stop_if_asked()

    def _stop_if_asked(self):
        if self.deadline and time.time() >= self.deadline:
            self.request_stop("time")
        if self.reason:
            self.model.stop_training = True


class TimeBudget(Callback):
    """`train --time-budget`: after each epoch, moves the run's last epoch to the last one
    that fits before `deadline` (a time.time() value), at most `most` (--epochs), and says so
    when the plan changes (wbc/budget.py), with the --epochs that would use the budget when
    `most` is what ends the run. StopControl stops at the deadline all the same, if an epoch
    runs long."""

    def __init__(self, model, deadline, most, clock=time.time):
        self.run = model
        self.deadline = deadline
        self.most = most
        self.clock = clock
        self.durations = []
        self.mark = None

    def on_train_begin(self, logs=None):
        self.mark = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        from wbc.budget import epochs_that_fit, typical_epoch_seconds
        now = self.clock()
        self.durations.append(now - self.mark)
        self.mark = now
        planned = self.run.last_epoch
        fit = epochs_that_fit(self.run.epoch, self.durations, self.deadline - now)
        last = min(fit, self.most)
        if last != planned or len(self.durations) == 1:
            self.run.set_last_epoch(last)
            ends = ("the run ends now" if last <= self.run.epoch else
                    f"the run ends after epoch {last}" + (
                        ", where the learning rate's cosine reaches 0" if
                        self.run.config.LEARNING_RATE_SCHEDULE == "cosine" else ""))
            if fit > last:      # --epochs, not the budget, ends the run
                ends += (f". --epochs={self.most} ends it before the budget, which has time "
                         f"until epoch {fit}: give --epochs={fit} or more to use it")
            print(f"Time budget: {(self.deadline - now) / 60:.1f} min left, about "
                  f"{typical_epoch_seconds(self.durations):.0f} s per epoch: {ends}",
                  flush=True)


def time_flags(args):
    """(seconds to stop after or None, whether that is a --time-budget) from the flags."""
    if args.time_limit is not None and args.time_budget is not None:
        raise UserError("--time-limit and --time-budget: give one. --time-budget=2h fits the "
                        "run's epochs into 2 h; --time-limit=2h stops the run as planned at 2 h")
    budget = args.time_budget is not None
    flag, text = ("--time-budget", args.time_budget) if budget else ("--time-limit",
                                                                    args.time_limit)
    if text is None:
        return None, False
    seconds = parse_duration(text, flag)
    if seconds <= 0:
        raise UserError(f"{flag}={text}: must be more than 0 (e.g. 8h)")
    return seconds, budget


def cmd_train(args):
    time_limit, budget = time_flags(args)
    if args.new_run and args.weights in BUILTIN_WEIGHTS:
        raise UserError(f"--new-run: starts a new run from a checkpoint of ours; with "
                        f"--weights={args.weights} every run is new already. Give "
                        "--weights=PATH or last, or leave out --new-run")
    quiet_tensorflow()
    check_layers_flag(args.layers)
    base = weights_config(args.weights, args.logs)
    saved_layers = base.pop("LAYERS", None)
    if args.new_run:    # fine-tuning starts at WBCConfig's 0.001, not the run's own rate
        base.pop("LEARNING_RATE", None)
    scratch = SCRATCH_RECIPE if args.weights == "none" else {}
    flags = {**image_size_config(args.image_size),
             "BACKBONE": args.backbone,
             "PYRAMID_MIN_LEVEL": PYRAMID_LEVELS.get(args.pyramid),
             "COMPUTE_DTYPE": args.precision,
             "CLASS_BALANCE": args.class_balance,
             "COLOR_NORMALIZATION": args.color_norm,
             "LEARNING_RATE_SCHEDULE": args.lr_schedule,
             "LEARNING_RATE_WARMUP_STEPS": args.warmup,
             "STEPS_PER_EPOCH": args.steps_per_epoch,
             "VALIDATION_STEPS": args.validation_steps,
             "AUGMENTATION": args.augment,
             "MASK_ROIS_PER_IMAGE": args.mask_rois}
    config = make_config(given={**scratch, **base}, **flags)
    broken = print_data_summary(args.dataset)
    mixed_in = mix_in_pairs(args.mix_in)
    train_set = load_subset(args.dataset, "train", broken, mixed_in)
    if mixed_in:
        print(f"Training set: {train_set.num_images} images, {len(mixed_in)} of them mixed in")
    val_set = load_subset(args.dataset, "val", broken)
    threads = set_threads(args.threads)
    if args.seed is not None:
        import numpy as np
        import tensorflow as tf
        np.random.seed(args.seed)
        tf.random.set_seed(args.seed)
    from mrcnn import model as modellib
    model = modellib.MaskRCNN("training", config, args.logs)
    source = resolve_weights(model, args.weights, args.logs, for_training=True)
    if args.new_run:
        model.set_log_dir()     # epoch 0 in a new run folder, not the checkpoint's run
    if model.last_checkpoint:   # continuing a run: on the images it was trained on?
        from mrcnn.weights import read_settings
        change = mix_in_change((read_settings(model.last_checkpoint) or {}).get("MIX_IN"),
                               mix_in_record(args.mix_in))
        if change:
            print(change)
    layers = args.layers or saved_layers or (
        "3+" if args.weights in ("coco", "imagenet") else "all")
    check_layers_match(model, layers)
    lr = args.lr if args.lr is not None else config.LEARNING_RATE
    stop = StopControl(config.STEPS_PER_EPOCH, time_limit)
    review = EpochReview(model, lr)
    restore = install_signal_handlers(stop)
    config.display()
    print(f"Weights: {source}")
    upto = (f"{args.epochs} or fewer, to fit --time-budget={args.time_budget}" if budget
            else args.epochs)
    print(f"Training layers {layers} at learning rate {lr} from epoch {model.epoch} to "
          f"{upto}, {config.STEPS_PER_EPOCH} steps per epoch, {threads} threads")
    try:
        model.make_log_dir()    # a new run's folder is claimed here, atomically
        # Only now: a folder this run does not own may be another run's, writing its files.
        stale = remove_stale_temp_files(model.log_dir)
        if stale:
            print(f"Removed {len(stale)} temporary file(s) of an interrupted run: "
                  f"{', '.join(stale)}")
        print(f"Checkpoints go to {model.log_dir}", flush=True)
        model.checkpoint_settings = dict(config.to_dict(), LAYERS=layers, LEARNING_RATE=lr,
                                         MIX_IN=mix_in_record(args.mix_in))
        write_json(os.path.join(model.log_dir, "config.json"), model.checkpoint_settings,
                   indent=1)
        callbacks = [stop, review]
        if budget:
            callbacks.append(TimeBudget(model, stop.deadline, args.epochs))
        model.train(train_set, val_set, learning_rate=lr, epochs=args.epochs, layers=layers,
                    augmentation=augmentation(config.AUGMENTATION, train_set, config),
                    custom_callbacks=callbacks, seed=args.seed,
                    sample_weights=class_balance_weights(train_set, config.CLASS_BALANCE))
    except FloatingPointError as exc:
        raise UserError(f"training stopped: {exc}") from None
    except OSError as exc:   # a full disk, a logs folder that cannot be written, ...
        raise UserError(training_write_error(exc, args, model)) from None
    finally:
        restore()
    last = model.last_checkpoint    # a stopped epoch is saved too
    if review.warning:
        print("The training loss diverged: see the warning above and curves.png in "
              f"{model.log_dir}")
    # A stop that came during the last epoch's validation found the training done.
    stopped = stop.reason if model.epoch < model.last_epoch or stop.cut_short else None
    if stopped == "time":
        print(f"Time {'budget' if budget else 'limit'} reached: saved {last}. "
              f"Resume with: {resume_command(args, model)}")
        return 0
    if stopped in ("SIGINT", "SIGTERM"):
        print(f"Interrupted ({stopped}): saved {last}. "
              f"Resume with: {resume_command(args, model)}")
        return 130 if stopped == "SIGINT" else 143
    print(f"Done: {last}")
    print(f"Next: python3 WBC.py evaluate --dataset={shlex.quote(args.dataset)} "
          f"--weights={shlex.quote(last)}")
    return 0


def resume_command(args, model):
    """The train command that continues from model.last_checkpoint: --weights=last when that
    picks this checkpoint, else its path (a newer run in --logs, e.g. when resuming an old
    run), and --epochs: the run's last epoch (as --time-budget moved it), at least one past
    the checkpoint (an epoch cut short by a stop counts as done)."""
    checkpoint = model.last_checkpoint
    try:
        newest = find_last_checkpoint(args.logs)
    except UserError:
        newest = None
    same = newest is not None and os.path.abspath(newest) == os.path.abspath(checkpoint)
    q = shlex.quote
    return (f"python3 WBC.py train --dataset={q(args.dataset)} "
            f"--weights={'last' if same else q(checkpoint)} --logs={q(args.logs)} "
            f"--epochs={max(model.last_epoch or args.epochs, model.epoch + 1)}"
            + "".join(f" --mix-in={q(mix.text)}" for mix in args.mix_in))


def training_write_error(exc, args, model):
    """One line for an OSError while training wrote its files: what failed, the last complete
    checkpoint of this run (intact) and how to resume, or to start again if it has none yet
    (the newest checkpoint in --logs may be another run's, e.g. the source of a --new-run)."""
    from mrcnn.weights import WeightsWriteError
    folder = model.log_dir if os.path.isdir(model.log_dir) else args.logs
    text = (f"training stopped: {exc}" if isinstance(exc, WeightsWriteError)
            else write_error_message(exc, "training stopped", folder))
    fix = "free some disk space" if is_disk_full(exc) else "fix that"
    if model.last_checkpoint is None:
        return (f"{text}. No checkpoint of this run was written yet; {fix}, then run the "
                "same command again")
    return (f"{text}. The last complete checkpoint is {model.last_checkpoint} (intact); "
            f"{fix}, then resume: {resume_command(args, model)}")


def check_layers_flag(layers):
    """UserError for a --layers value that is neither a name nor a valid regex."""
    if layers is None:
        return
    from mrcnn.model import LAYER_REGEX
    try:
        re.compile(LAYER_REGEX.get(layers, layers))
    except re.error as exc:
        raise UserError(f"--layers={layers}: not a valid regular expression ({exc}). Use "
                        "heads, 3+, 4+, 5+, all or a regex over layer names") from None


def check_layers_match(model, layers):
    """UserError when --layers names no layer of the model (training would change nothing)."""
    from mrcnn.model import LAYER_REGEX
    regex = LAYER_REGEX.get(layers, layers)
    if not any(re.fullmatch(regex, layer.name) for layer in model.get_trainable_layers()):
        raise UserError(f"--layers={layers}: matches no layer of the {model.config.BACKBONE} "
                        "model, so nothing would learn. Use heads, 3+, 4+, 5+, all or a regex "
                        "over layer names (e.g. 'mrcnn_.*')")


def install_signal_handlers(stop):
    """Ctrl-C / SIGTERM finish the current step, save a checkpoint and exit 130 / 143."""
    import signal
    previous = {}

    def handler(signum, frame):
        name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
        if stop.reason:  # a second signal: give up at once
            raise KeyboardInterrupt
        print(f"\n{name}: saving a checkpoint after this step (press again to abort) ...",
              file=sys.stderr)
        stop.request_stop(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


class EpochReview(Callback):
    """After every epoch, from <log_dir>/losses.csv (written just before): redraws
    curves.png and prints a warning when the training loss has diverged (wbc/divergence.py;
    only a run's first divergence, and only if confirmed after training started or resumed:
    a resumed run was warned before); `warning` keeps its text."""

    def __init__(self, model, learning_rate):
        self.run = model
        self.learning_rate = learning_rate
        self.start_epoch = model.epoch
        self.warning = None

    def on_epoch_end(self, epoch, logs=None):
        from wbc.divergence import divergence_message, find_divergence
        from wbc.report import plot_loss_curves, read_losses
        csv_path = os.path.join(self.run.log_dir, "losses.csv")
        if not os.path.isfile(csv_path):
            return
        plot_loss_curves(csv_path, os.path.join(self.run.log_dir, "curves.png"))
        if self.warning is None:
            _, data = read_losses(csv_path)
            found = find_divergence(data["epoch"], data.get("loss", []))
            if found is not None and found.confirmed_epoch > self.start_epoch:
                self.warning = divergence_message(found, self.learning_rate)
                print(self.warning, file=sys.stderr, flush=True)


def print_data_summary(dataset_dir):
    """Check and print the dataset; returns the files found broken (left out of training).
    UserError when train or val has no usable image/mask pair."""
    from wbc.dataset import check_dataset, format_check_report
    report = check_dataset(dataset_dir)
    print(format_check_report(report))
    for p in report["problems"]:
        if p["kind"] == "missing_folder":
            raise UserError(f"{p['path']}: {p['message']}. {p['fix']}")
    if not report["subsets"]["train"]["usable"]:
        raise UserError(f"{dataset_dir}: no usable training images (see the problems above)")
    if not report["usable"]:
        raise UserError(f"{os.path.join(dataset_dir, 'val')}: no usable image/mask pair with a "
                        "cell to validate on (see the problems above). Move some pairs from "
                        "train to val")
    return {p["path"] for p in report["problems"] if p["severity"] == "error"
            and p["kind"] in ("unreadable", "size_mismatch")}


# ----------------------------------------------------------------------------- detect
def detection_threshold(min_confidence, stored):
    """min_confidence if given, else the run's saved DETECTION_MIN_CONFIDENCE, else WBCConfig's."""
    if min_confidence is not None:
        return min_confidence
    return stored.get("DETECTION_MIN_CONFIDENCE", WBCConfig.DETECTION_MIN_CONFIDENCE)


def score_floor(min_confidence=None):
    """The score down to which detections are kept where something ranks or merges them (AP
    in evaluate, the members of an ensemble or of --tta): EVAL_MIN_SCORE, or min_confidence
    if that is lower."""
    return EVAL_MIN_SCORE if min_confidence is None else min(EVAL_MIN_SCORE, min_confidence)


def weights_list(spec):
    """--weights=A[,B...] -> ["A", "B", ...]: one weights spec, or several (an ensemble) of
    last|PATH. A path that exists as given is one spec, commas and all."""
    if os.path.isfile(spec):
        return [spec]
    specs = [part.strip() for part in spec.split(",")]
    if not all(specs):
        raise UserError(f"--weights={spec}: an empty entry. Give last|PATH, or PATH,PATH,... "
                        "for an ensemble")
    if len(specs) > 1:
        for part in specs:
            if part in BUILTIN_WEIGHTS:
                raise UserError(f"--weights={spec}: an ensemble is of trained WBC runs; "
                                f"'{part}' is not one. Give last or .h5 paths")
            if part != "last" and not os.path.isfile(part):
                raise UserError(f"--weights={spec}: {part}: file not found")
    return specs


def inference_model(weights, logs, min_confidence=None, image_size=None, precision=None,
                    tta=False, per_class=None, ranked=False):
    """An inference model for --weights=A[,B...]; returns (model, [source of each weights]).

    Each MaskRCNN gets the config of the run its weights come from. One weights spec without
    tta: that MaskRCNN, with min_confidence (None keeps the run's threshold). Several (an
    ensemble) or tta: a MergedModel whose members detect down to EVAL_MIN_SCORE (or
    min_confidence if lower), with the threshold (min_confidence, else the first run's)
    applied to the merged scores. per_class: DETECTION_PER_CLASS (None keeps WBCConfig's).
    ranked (evaluate's AP): every model, members included, keeps at least EVAL_MAX_DETECTIONS
    detections per image instead of its run's DETECTION_MAX_INSTANCES; a MergedModel keeps
    the first model's cap of merged detections.
    """
    specs = weights_list(weights)
    quiet_tensorflow()
    from mrcnn import model as modellib
    merged = tta or len(specs) > 1
    member_confidence = score_floor(min_confidence) if merged else min_confidence
    stored = [weights_config(spec, logs) for spec in specs]
    models, sources = [], []
    for spec, saved in zip(specs, stored):
        saved.pop("LAYERS", None)
        cap = saved.get("DETECTION_MAX_INSTANCES", WBCConfig.DETECTION_MAX_INSTANCES)
        config = make_config(given=saved, **image_size_config(image_size),
                             DETECTION_MIN_CONFIDENCE=member_confidence, COMPUTE_DTYPE=precision,
                             DETECTION_PER_CLASS=per_class,
                             DETECTION_MAX_INSTANCES=max(cap, EVAL_MAX_DETECTIONS)
                             if ranked else None)
        model = modellib.MaskRCNN("inference", config, logs)
        source = resolve_weights(model, spec, logs, for_training=False)
        if any(os.path.realpath(source) == os.path.realpath(s) for s in sources):
            raise UserError(f"--weights={weights}: {source} is given twice; an ensemble "
                            "needs different runs")
        sources.append(source)
        models.append(model)
    if not merged:
        return models[0], sources
    threshold = detection_threshold(min_confidence, stored[0])
    return MergedModel(models, threshold, views=VIEWS if tta else VIEWS[:1]), sources


def per_class_record(per_class):
    """{"per_class": value} for --per-class / --no-per-class when it differs from WBCConfig's
    default, else {}: the record of a detect folder written before the flag existed, or
    without it, still matches (one class per region and one per (region, class) give the
    same detections at a threshold above 0.5)."""
    if per_class is None or per_class == WBCConfig.DETECTION_PER_CLASS:
        return {}
    return {"per_class": per_class}


def merge_description(n_models, tta):
    """' (ensemble of 2 models, test-time augmentation: 8 views)' or '' for one plain model."""
    parts = ([f"ensemble of {n_models} models"] if n_models > 1 else []) + \
        ([f"test-time augmentation: {len(VIEWS)} views"] if tta else [])
    return f" ({', '.join(parts)})" if parts else ""


def cmd_detect(args):
    from wbc.detect import detect_files, list_images, plan_jobs
    if bool(args.image) == bool(args.images):
        raise UserError("detect needs exactly one of --image=FILE or --images=DIR")
    files = list_images(args.image, args.images)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out={args.out}: is a file, not a folder. Give a folder for the "
                        "results")
    model = description = None
    if plan_jobs(files, args.out)[1]:
        set_threads(args.threads)
        model, sources = inference_model(args.weights or "last", args.logs,
                                         args.min_confidence, precision=args.precision,
                                         tta=args.tta, per_class=args.per_class)
        print(f"Weights: {', '.join(sources)}" + merge_description(len(sources), args.tta))
        description = {"weights": sources, "tta": args.tta,
                       "min_confidence": args.min_confidence, **per_class_record(args.per_class)}
    summary = detect_files(model, files, args.out, CLASS_NAMES, model_description=description)
    print(summary)
    return 0


# ----------------------------------------------------------------------------- evaluate
def evaluate_folder(sources, subset, tta):
    """Default report folder: beside the (first) weights file, <stem>_eval_<subset>[_tta];
    for an ensemble <stem>_ensemble<N>-<hash of all members>_eval_<subset>[_tta]; under
    results/evaluate for weights that are not a file (--weights=none)."""
    if not os.path.isfile(sources[0]):
        return os.path.join("results", "evaluate" + ("_tta" if tta else ""))
    name = f"_eval_{subset}" + ("_tta" if tta else "")
    if len(sources) > 1:
        digest = hashlib.sha1("\n".join(sorted(map(os.path.abspath, sources))).encode())
        name = f"_ensemble{len(sources)}-{digest.hexdigest()[:6]}" + name
    return os.path.splitext(sources[0])[0] + name


def unused_report_folder(folder, dataset):
    """`folder`, unless it holds a report (metrics.json) of another data set: then
    `folder-<data set's folder name>`, or with a hash of its path if that is taken too, so
    that evaluating the same weights on a second data set never replaces the first report."""
    dataset = os.path.realpath(dataset)
    name = os.path.basename(dataset)
    digest = hashlib.sha1(dataset.encode()).hexdigest()[:6]
    for candidate in (folder, f"{folder}-{name}"):
        report = read_json(os.path.join(candidate, "metrics.json"))
        if not isinstance(report, dict):      # no report (or no readable one) there
            return candidate
        reported = report.get("dataset")
        if reported and os.path.realpath(reported) == dataset:
            return candidate
    return f"{folder}-{name}-{digest}"


def cmd_evaluate(args):
    from wbc.detect import evaluate_dataset
    if args.results and args.weights:
        raise UserError(f"--results={args.results} scores a results file and "
                        f"--weights={args.weights} a model: give only one of them")
    weights = args.weights or "last"
    for flag, given in (("--tta", args.tta),
                        ("--per-class / --no-per-class", args.per_class is not None)):
        if args.results and given:
            raise UserError(f"{flag} needs a model to detect with, not --results")
    first_weights = weights_list(weights)[0]
    data = load_subset(args.dataset, args.subset)
    stored = {} if args.results else weights_config(first_weights, args.logs)
    confidence = detection_threshold(args.min_confidence, stored)
    meta = {"dataset": os.path.abspath(args.dataset), "subset": args.subset,
            "min_confidence": confidence, "tta": args.tta}
    if args.results:
        if not os.path.isfile(args.results):
            raise UserError(f"--results={args.results}: file not found")
        out = args.out or unused_report_folder(
            os.path.splitext(args.results)[0] + f"_eval_{args.subset}", args.dataset)
        meta["results"] = os.path.abspath(args.results)
        print(evaluate_dataset(None, data, out, CLASS_NAMES, confidence, meta,
                               results_path=args.results))
        return 0
    set_threads(args.threads)
    # Detections down to a low score, so that AP sees the whole precision-recall curve;
    # precision, recall, F1, confusion and counts use `confidence`.
    model, sources = inference_model(weights, args.logs, score_floor(confidence),
                                     precision=args.precision, tta=args.tta,
                                     per_class=args.per_class, ranked=True)
    meta["model"] = ", ".join(sources)
    meta["ensemble"] = len(sources)
    meta["per_class"] = model.config.DETECTION_PER_CLASS
    meta["max_detections"] = model.config.DETECTION_MAX_INSTANCES
    print(f"Weights: {meta['model']}" + merge_description(len(sources), args.tta))
    out = args.out or unused_report_folder(evaluate_folder(sources, args.subset, args.tta),
                                           args.dataset)
    print(evaluate_dataset(model, data, out, CLASS_NAMES, confidence, meta))
    return 0


# ----------------------------------------------------------------------------- data commands
def cmd_check(args):
    from wbc.dataset import check_dataset, format_check_report
    report = check_dataset(args.dataset)
    print(format_check_report(report))
    return 0 if report["usable"] else 2


def cmd_import_lisc(args):
    from wbc.lisc import format_import_report, import_lisc
    report = import_lisc(args.source, args.out, val_fraction=args.val_fraction, seed=args.seed)
    print(format_import_report(report))
    print(f"Next: python3 WBC.py check --dataset={shlex.quote(args.out)}")
    return 0


def cmd_synth(args):
    from wbc.synth import generate
    counts = generate(args.out, images=args.images, size=args.size, seed=args.seed,
                      single_cells=args.single_cells)
    for subset in ("train", "val"):
        print(f"{subset}: " + ", ".join(f"{k} {v}" for k, v in counts[subset].items()))
    print(f"Wrote {args.images} images to {args.out} in {counts['seconds']:.1f} s")
    return 0


def cmd_demo(args):
    from wbc.demo import run_demo
    return run_demo(args)


# ----------------------------------------------------------------------------- CLI
class Parser(argparse.ArgumentParser):
    """argparse with the tool's error format: one line `error: ...` and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message}. See: python3 {self.prog} --help\n")


def number(kind, low=None, high=None, low_open=False):
    """An argparse type: int or float within [low, high] (low excluded with low_open)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            bound = "more than" if low_open else "at least"
            raise argparse.ArgumentTypeError(f"{text} must be {bound} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be at most {high}")
        return value
    parse.__name__ = kind.__name__
    return parse


def build_parser():
    parser = Parser(
        prog="WBC.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[2:]))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices       # name (or alias) -> its parser

    def add(name, func, example, help_text, aliases=()):
        p = sub.add_parser(name, help=help_text, aliases=list(aliases),
                           description=f"{help_text}\n\nexample:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def model_flags(p):
        p.add_argument("--weights", default=None,
                       help="last|none|PATH (default last = newest checkpoint under --logs; "
                       "none: an untrained model); PATH,PATH,... merges the detections of "
                       "several runs (an ensemble, with the first run's threshold)")
        p.add_argument("--logs", default=DEFAULT_LOGS, help="training runs folder (default logs)")
        threads_flag(p)
        precision_flag(p)
        p.add_argument("--min-confidence", type=number(float, 0, 1), default=None,
                       help="lowest score of a detection (default: the run's, 0.7)")
        p.add_argument("--tta", action="store_true",
                       help="test-time augmentation: detect on the 8 turned and mirrored views "
                            "of each image and merge (8x the time; fewer spurious cells, "
                            "closer outlines)")
        p.add_argument("--per-class", action=argparse.BooleanOptionalAction, default=None,
                       help="one detection per (region, class) whose score reaches the "
                            "threshold, as torchvision does (default); --no-per-class: one "
                            "per region, of its top class, as Matterport does")

    def threads_flag(p):
        p.add_argument("--threads", type=number(int, 1), default=None,
                       help="CPU threads (default: all)")

    def precision_flag(p):
        p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=None,
                       help="compute precision (default auto: bfloat16 on CPUs with native "
                            "bfloat16, e.g. AVX512_BF16, else float32)")

    p = add("train", cmd_train, "python3 WBC.py train --dataset=WBC --weights=coco --epochs=30",
            "train on DATASET/train, validate on DATASET/val; checkpoints in --logs")
    p.add_argument("--dataset", required=True, help="folder with train/ and val/")
    p.add_argument("--weights", default="none", help="coco|imagenet|last|none|PATH (default none)")
    p.add_argument("--logs", default=DEFAULT_LOGS, help="where runs are written (default logs)")
    p.add_argument("--epochs", type=number(int, 1), default=75,
                   help="train up to this epoch (default 75)")
    p.add_argument("--new-run", action="store_true",
                   help="start a new run at epoch 0 from the --weights checkpoint (fine-tuning, "
                        "e.g. after pretraining on synth --single-cells; learning rate 0.001 "
                        "unless --lr) instead of continuing that checkpoint's run from its epoch")
    p.add_argument("--steps-per-epoch", type=number(int, 1), default=None,
                   help="training batches per epoch (default 200; the run's own on resume)")
    p.add_argument("--validation-steps", type=number(int, 1), default=None,
                   help="validation batches per epoch (default 15)")
    p.add_argument("--layers", default=None,
                   help="heads|3+|4+|5+|all|REGEX (default: 3+ from coco/imagenet, the run's "
                        "own on resume, else all)")
    p.add_argument("--lr", type=number(float, 0, low_open=True), default=None,
                   help="learning rate (default 0.0025 with --weights=none, else 0.001; the run's "
                        "own on resume, but not with --new-run)")
    p.add_argument("--image-size", type=number(int), default=None,
                   help="square side in px, a multiple of 64, at least 128 (default 512; "
                        "pick the size that makes cells 100-200 px)")
    p.add_argument("--backbone", choices=["resnet50", "resnet101", "small"], default=None,
                   help="default small with --weights=none (the from-scratch recipe), "
                        "else resnet50; small has no pretrained weights")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help=f"{'|'.join(AUGMENTATIONS)} (default: default, the run's own on resume)")
    p.add_argument("--time-limit", default=None, help="e.g. 8h: save and stop cleanly then")
    p.add_argument("--time-budget", default=None,
                   help="e.g. 2h: train as many of --epochs as fit in that time, timed as the "
                        "run goes; the learning rate's cosine ends at the last that fits")
    p.add_argument("--seed", type=number(int, 0), default=None)
    threads_flag(p)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                   help="constant (Matterport) or cosine down to 0 at --epochs (default: "
                        "WBCConfig's)")
    p.add_argument("--warmup", type=number(int, 0), default=None, metavar="STEPS",
                   help="ramp the learning rate up over the first STEPS steps")
    p.add_argument("--class-balance", type=number(float, 0), default=None, metavar="POWER",
                   help="draw training images by (images of their class) ** -POWER: 0.5 "
                        "shows rare classes more often, 0 = uniform (default: WBCConfig's)")
    p.add_argument("--color-norm", choices=COLOR_NORMALIZATIONS, default=None,
                   help="per-image: standardise each image's colour channels (training and "
                        "inference), so smears of other stains look alike (default: WBCConfig's)")
    p.add_argument("--pyramid", choices=sorted(PYRAMID_LEVELS), default=None,
                   help="p3: RPN, anchors and ROIAlign from P3 (a third less compute; cells "
                        "larger than ~48 px); p2: Matterport's P2..P6 (default: WBCConfig's)")
    p.add_argument("--mask-rois", type=number(int, 1), default=None, metavar="N",
                   help="train the mask head on at most N positive ROIs per image, a random "
                        "sample (default: all, about 10 per cell; 4 makes a step about a third "
                        "shorter on CPUs without bfloat16; the run's own on resume)")
    p.add_argument("--mix-in", type=mix_in_flag, action="append", default=[],
                   metavar="DIR:CLASS=N",
                   help="add the first N training images of CLASS from the data set DIR "
                        "(e.g. drawn by synth --single-cells) to the training set, as if they "
                        "were in it; several classes as CLASS=N,CLASS=N; repeatable")
    precision_flag(p)

    p = add("evaluate", cmd_evaluate, "python3 WBC.py evaluate --dataset=WBC --weights=last",
            "score a model (or a detect results JSON) on DATASET/SUBSET")
    p.add_argument("--dataset", required=True)
    p.add_argument("--subset", default="val")
    model_flags(p)
    p.add_argument("--results", default=None, help="score this COCO-results JSON instead")
    p.add_argument("--out", default=None, help="report folder (default: beside the weights)")

    p = add("detect", cmd_detect, "python3 WBC.py detect --images=smears/ --out=results/run1",
            "outline and name the white cells of images", aliases=["predict"])
    p.add_argument("--image", default=None, help="one image file")
    p.add_argument("--images", default=None, help="a folder of images")
    model_flags(p)
    p.add_argument("--out", default=os.path.join("results", "detect"),
                   help="output folder (default results/detect)")

    p = add("check", cmd_check, "python3 WBC.py check --dataset=WBC",
            "validate a dataset folder and say what is wrong; exit 0 if usable, 2 if not")
    p.add_argument("--dataset", required=True)

    p = add("import-lisc", cmd_import_lisc,
            'python3 WBC.py import-lisc --source="LISC Database" --out=WBC',
            "convert the LISC archive into the dataset layout with a train/val split")
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--val-fraction", type=number(float, 0, 1), default=0.2,
                   help="share of each class's images put in val, in [0, 1) (default 0.2)")
    p.add_argument("--seed", type=number(int, 0), default=0)

    p = add("synth", cmd_synth, "python3 WBC.py synth --out=WBC-synth --images=200",
            "draw synthetic blood smears in the dataset layout")
    p.add_argument("--out", required=True)
    p.add_argument("--images", type=number(int, 1), default=100,
                   help="how many images to draw (default 100)")
    p.add_argument("--size", type=number(int), default=512,
                   help="side of each smear in px (default 512); with --single-cells, the "
                        "smallest smear the cells are cut from")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--single-cells", action="store_true",
                   help="one white cell per image, cropped so that it fills 50-72%% of the "
                        "side, from smears of 1-2x --size (cells of about 60-240 px at the default "
                        "size): data to pretrain on before single-cell data such as wbc-zheng2018")

    p = add("demo", cmd_demo, "python3 WBC.py demo",
            "synthesise a small set, train a small model for a few minutes, evaluate, detect")
    p.add_argument("--out", default="demo", help="demo folder (default demo/)")
    p.add_argument("--minutes", type=number(float, 0, low_open=True), default=7.0,
                   help="training time (default 7)")
    threads_flag(p)
    return parser


def options_before_command(argv, commands):
    """The one-line error for options given before the command name (`WBC.py --dataset=WBC
    train`, which argparse would read as unknown arguments and then say the command lacks
    them), or None. The command is the first command name that is not an option's value
    (`--subset train evaluate`: evaluate); the error gives the line reordered when it finds
    one."""
    if not argv or not argv[0].startswith("-") or any(
            arg == "-h" or (len(arg) > 2 and "--help".startswith(arg)) for arg in argv):
        return None
    for i, arg in enumerate(argv[1:], 1):
        after_bare_option = argv[i - 1].startswith("-") and "=" not in argv[i - 1]
        if arg in commands and not after_bare_option:
            reordered = shlex.join(["python3", "WBC.py", arg, *argv[:i], *argv[i + 1:]])
            return f"error: {argv[0]} goes after the command name: {reordered}"
    return ("error: options go after the command name: python3 WBC.py COMMAND --option=value. "
            "See: python3 WBC.py --help")


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    misplaced = options_before_command(argv, parser.commands)
    if misplaced:
        parser.exit(2, misplaced + "\n")
    args, unknown = parser.parse_known_args(argv)
    if unknown:     # reported by the command's parser, so the hint names its --help
        parser.commands.get(args.command, parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if is_disk_full(exc):
            print(f"error: {write_error_message(exc, args.command, os.getcwd())}. Free some "
                  "disk space and run the command again", file=sys.stderr)
        elif getattr(exc, "filename", None):    # a file or folder that cannot be made or read
            where = os.fspath(exc.filename)
            if is_temp_name(os.path.basename(where)):   # ours, beside the output asked for
                where = os.path.dirname(where) or "."
            print(f"error: {where}: {exc.strerror or exc}. Check the path and its "
                  "permissions", file=sys.stderr)
        else:
            raise
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
