"""Shared test set-up: import path, quiet TensorFlow, tiny configurations, WBC.py in-process."""
import contextlib
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

import pytest  # noqa: E402

from mrcnn.config import Config  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "wbc-zheng2018")


class TinyConfig(Config):
    """A small, fast configuration: 128x128 images, ResNet50, few ROIs, 3 shape classes."""
    NAME = "tiny"
    NUM_CLASSES = 1 + 3
    IMAGES_PER_GPU = 1
    BACKBONE = "resnet50"
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 10
    DETECTION_MAX_INSTANCES = 10
    DETECTION_MIN_CONFIDENCE = 0
    MINI_MASK_SHAPE = (28, 28)
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


@pytest.fixture
def tiny_config():
    return TinyConfig()


def cli(*argv):
    """`python3 WBC.py ARGV` run in this process, without a new interpreter and TensorFlow
    import (about 9 s each on a slow CPU): (exit code, stdout, stderr)."""
    import WBC
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = WBC.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()
