"""MaskRCNN end to end on tiny configurations: graph contracts, detect(), weight files
(Matterport's layout), checkpoints, resume and learning."""
import csv
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TinyConfig
from matterport_h5 import write_full_model_h5, write_matterport_h5
from mrcnn import model as modellib
from mrcnn.config import Config
from mrcnn.data import ResizedImages, TrainingInput, load_image_gt, mold_image
from mrcnn.np_images import normalize_colors, resize_image
from mrcnn.weights import WeightsFileError, model_weight_map, read_settings
from shapes import ShapesDataset

EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(12, 128, seed=1), ShapesDataset(4, 128, seed=2)


@pytest.fixture(scope="module")
def inference_model(tmp_path_factory):
    return modellib.MaskRCNN("inference", TinyConfig(), str(tmp_path_factory.mktemp("logs")))


def test_training_graph_contract(tmp_path, shapes):
    config = TinyConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    batch = next(TrainingInput(shapes[0], config, seed=0).batches())
    outputs = [o.numpy() for o in model.keras_model(list(batch), training=True)]
    (rpn_logits, rpn_class, rpn_bbox, class_logits, class_probs, bbox, mask, rpn_rois,
     rois) = outputs[:9]
    anchors = len(model.get_anchors(config.IMAGE_SHAPE))
    t, p, nc = config.TRAIN_ROIS_PER_IMAGE, int(config.TRAIN_ROIS_PER_IMAGE * 0.33), 4
    assert anchors == 3 * (32 ** 2 + 16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2)
    assert rpn_logits.shape == rpn_class.shape == (1, anchors, 2)
    assert rpn_bbox.shape == (1, anchors, 4)
    np.testing.assert_allclose(rpn_class.sum(-1), 1, rtol=1e-5)
    assert class_logits.shape == class_probs.shape == (1, t, nc)
    assert bbox.shape == (1, t, nc, 4)
    # The mask head runs on the positive ROIs only (at least one row, at most P).
    assert 1 <= mask.shape[1] <= p and mask.shape[2:] == (28, 28, nc)
    assert 0 <= mask.min() and mask.max() <= 1
    assert rpn_rois.shape == (1, config.POST_NMS_ROIS_TRAINING, 4)
    assert 0 <= rpn_rois.min() and rpn_rois.max() <= 1
    assert rois.shape == (1, t, 4)
    names = model.keras_model.output_names
    assert names[:3] == ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    assert names[7:] == ["ROI", "output_rois"] + modellib.LOSS_NAMES
    for value in outputs[9:]:
        assert value.shape == (1,) and np.isfinite(value).all() and value[0] >= 0


def test_mask_rois_per_image_limits_the_mask_heads_rows(tmp_path, shapes):
    """MASK_ROIS_PER_IMAGE = 2: the mask head trains on the first 2 positive ROIs of the
    sampled ones (the same boxes as the classifier's first rows), at least 1 row."""
    import keras
    from mrcnn.roi import mask_roi_count, positive_roi_count

    class Capped(TinyConfig):
        BACKBONE = "small"
        PROPOSALS_INCLUDE_GT = True
        MASK_ROIS_PER_IMAGE = 2
    config = Capped()
    assert positive_roi_count(config) == 10 and mask_roi_count(config) == 2
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    km = model.keras_model
    probe = keras.Model(km.inputs, [km.get_layer("proposal_targets").output,
                                    km.get_layer("positive_rows").output] + km.outputs[-5:])
    batches = TrainingInput(shapes[0], config, seed=0).batches()
    seen = set()
    for _ in range(6):
        (rois, class_ids, _, masks), (mask_rois, mask_ids, mask_targets), *losses = probe(
            [tf.constant(x) for x in next(batches)], training=True)
        positives = int(np.sum(class_ids.numpy() > 0))
        seen.add(positives)
        assert mask_rois.shape[1] == max(1, min(positives, 2))
        k = mask_rois.shape[1]
        np.testing.assert_array_equal(mask_rois.numpy(), rois.numpy()[:, :k])
        np.testing.assert_array_equal(mask_ids.numpy(), class_ids.numpy()[:, :k])
        np.testing.assert_array_equal(mask_targets.numpy(), masks.numpy()[:, :k])
        assert all(np.isfinite(x.numpy()).all() for x in losses)
    batches.close()
    assert max(seen) > 2        # the limit did cut rows in some batch


@pytest.mark.parametrize("limit, expected", [(None, 10), (4, 4), (1, 1), (50, 10),
                                             (0, ValueError), (2.5, ValueError)])
def test_mask_roi_count_follows_the_limit(limit, expected):
    from mrcnn.roi import mask_roi_count

    class Limited(TinyConfig):
        MASK_ROIS_PER_IMAGE = limit
    if expected is ValueError:
        with pytest.raises(ValueError, match="MASK_ROIS_PER_IMAGE"):
            mask_roi_count(Limited())
    else:
        assert mask_roi_count(Limited()) == expected


def test_layer_names_follow_matterport(inference_model):
    names = {layer.name for layer in inference_model.keras_model.layers}
    for name in ["conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch1", "res4f_branch2c",
                 "res5c_branch2c", "fpn_c5p5", "fpn_p2", "fpn_p6", "rpn_model", "ROI",
                 "mrcnn_class_conv1", "mrcnn_class_bn2", "mrcnn_class_logits", "mrcnn_bbox_fc",
                 "mrcnn_mask_conv4", "mrcnn_mask_deconv", "mrcnn_mask", "mrcnn_detection",
                 "roi_align_classifier", "roi_align_mask", "input_image", "input_anchors"]:
        assert name in names, name
    inner = {l.name for l in inference_model.keras_model.get_layer("rpn_model").layers}
    assert {"rpn_conv_shared", "rpn_class_raw", "rpn_bbox_pred"} <= inner


def test_detect_contract(inference_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 140, 3)).astype(np.uint8)
    (r,) = inference_model.detect([image])
    n = len(r["class_ids"])
    assert r["rois"].dtype == np.int32 and r["rois"].shape == (n, 4)
    assert r["class_ids"].dtype == np.int32 and r["scores"].dtype == np.float32
    assert r["masks"].shape == (100, 140, n) and r["masks"].dtype == bool
    # The raw mask output keeps DETECTION_MAX_INSTANCES rows; rows without a detection are 0.
    molded, metas, _ = inference_model.mold_inputs([image])
    anchors = inference_model.get_anchors(molded[0].shape)[None]
    detections, *_, raw_masks = inference_model._predict(molded, metas, anchors)[:4]
    real = int((detections[0, :, 4] > 0).sum())
    assert raw_masks.shape[1] == inference_model.config.DETECTION_MAX_INSTANCES
    assert not raw_masks[0, real:].any()
    assert (np.diff(r["scores"]) <= 1e-6).all()
    assert (r["rois"][:, :2] >= 0).all() and (r["rois"][:, 2] <= 100).all()
    assert (r["rois"][:, 3] <= 140).all()
    assert ((r["class_ids"] >= 1) & (r["class_ids"] < 4)).all()
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        inference_model.detect([image, image])


def test_color_normalization_reaches_training_input_and_inference(inference_model, monkeypatch):
    config = TinyConfig()
    config.COLOR_NORMALIZATION = "per-image"
    dataset = ShapesDataset(1, 100, seed=3)
    image = dataset.load_image(0)
    expected = resize_image(normalize_colors(image, "per-image"), min_dim=128, max_dim=128)[0]
    assert (expected != resize_image(image, min_dim=128, max_dim=128)[0]).any()
    np.testing.assert_array_equal(load_image_gt(dataset, config, 0)[0], expected)
    monkeypatch.setattr(inference_model.config, "COLOR_NORMALIZATION", "per-image")
    molded = inference_model.mold_inputs([image])[0]
    np.testing.assert_array_equal(molded[0], mold_image(expected, config))
    with pytest.raises(ValueError, match="COLOR_NORMALIZATION='lab'"):
        type("Lab", (TinyConfig,), {"COLOR_NORMALIZATION": "lab"})()


class OneColourDataset(ShapesDataset):
    """ShapesDataset whose images are one flat colour with a darker square: references of a
    known look for histogram matching."""

    def __init__(self, colour):
        super().__init__(2, 100)
        self.colour = colour

    def load_image(self, image_id):
        image = np.empty((100, 100, 3), np.uint8)
        image[:] = self.colour
        image[30:60, 30:60] //= 2
        return image


def test_restyle_augmentation_takes_a_training_images_colours_and_keeps_the_masks():
    import WBC
    references = OneColourDataset((60, 90, 220))
    references.prepare()
    config = TinyConfig()
    resized = ResizedImages(references, config)
    assert len(resized) == 2 and resized[1].shape == (128, 128, 3)
    np.testing.assert_array_equal(resized[1], load_image_gt(references, config, 1)[0])
    restyle = WBC.augmentation("restyle", references, config)
    restyle.pipeline.set_random_seed(0)
    image = np.zeros((128, 128, 3), np.uint8)
    image[14:114, 14:114] = (210, 120, 60)       # padded like a resized image, another colour
    mask = np.zeros((128, 128), np.uint8)
    mask[40:80, 20:50] = 1

    def blue_cast(pipeline):
        out = pipeline(image=image, masks=[mask])
        assert out["masks"][0].sum() == mask.sum()       # turned or mirrored, never recoloured
        flat = out["image"].reshape(-1, 3).astype(float)
        return flat[:, 2].mean() > flat[:, 0].mean()      # the reference's cast, not the image's

    restyled = sum(blue_cast(restyle) for _ in range(40))
    assert 8 <= restyled <= 32                  # histogram matching is drawn for half the images
    default = WBC.augmentation("default")
    default.set_random_seed(0)
    assert not any(blue_cast(default) for _ in range(10))


def test_augmentation_does_not_ask_the_network_for_updates():
    """albumentations checks PyPI for a newer release on import unless told not to."""
    probe = ("import socket, urllib.request\n"
             "def refuse(*args, **kwargs):\n"
             "    raise SystemExit('network opened: ' + repr(args[1:2]))\n"
             "urllib.request.OpenerDirector.open = refuse\n"
             "socket.create_connection = refuse\n"
             "import WBC\n"
             "WBC.augmentation('default')\n"
             "print('offline')\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "offline", result.stderr


class CountingColourDataset(OneColourDataset):
    """OneColourDataset that records which images were loaded from 'disk'."""

    def __init__(self, colour):
        super().__init__(colour)
        self.loaded = []

    def load_image(self, image_id):
        self.loaded.append(image_id)
        return super().load_image(image_id)


def test_reference_images_are_loaded_once_while_cached_not_on_every_augmentation():
    import WBC
    references = CountingColourDataset((60, 90, 220))
    references.prepare()
    restyle = WBC.augmentation("restyle", references, TinyConfig())
    restyle.pipeline.set_random_seed(0)
    image = np.zeros((128, 128, 3), np.uint8)
    for _ in range(30):
        restyle(image=image)
    assert sorted(references.loaded) == [0, 1]     # each of the 2 references read once
    resized = ResizedImages(references, TinyConfig(), cache_size=1)
    references.loaded.clear()
    first = resized[0]
    assert resized[0] is first and references.loaded == [0]
    assert not first.flags.writeable              # shared between callers: not to be changed
    assert resized[-1].shape == first.shape and references.loaded == [0, 1]
    resized[0]                                      # evicted by image 1: read again
    assert references.loaded == [0, 1, 0]
    with pytest.raises(IndexError):
        resized[2]


# Matterport's mrcnn.model names (../shared/spec/matterport-compat.md) that a user's script
# may import; generate_random_rois and build_detection_targets (its debugging path for
# random ROIs in data_generator) are not provided (README, "What differs from Matterport").
MATTERPORT_MODEL_API = """MaskRCNN log BatchNorm load_image_gt data_generator mold_image
unmold_image compose_image_meta parse_image_meta parse_image_meta_graph compute_backbone_shapes
build_rpn_targets resnet_graph identity_block conv_block rpn_graph build_rpn_model
fpn_classifier_graph build_fpn_mask_graph ProposalLayer PyramidROIAlign DetectionTargetLayer
DetectionLayer rpn_class_loss_graph rpn_bbox_loss_graph mrcnn_class_loss_graph
mrcnn_bbox_loss_graph mrcnn_mask_loss_graph smooth_l1_loss norm_boxes_graph denorm_boxes_graph
trim_zeros_graph batch_pack_graph apply_box_deltas_graph clip_boxes_graph overlaps_graph
log2_graph""".split()


def test_matterport_model_api_names_are_importable():
    missing = [name for name in MATTERPORT_MODEL_API if not callable(getattr(modellib, name, None))]
    assert missing == []


def test_anchor_count_at_1024_default_config():
    class Default(Config):
        NAME = "default"
    model_anchors = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model_anchors.config, model_anchors._anchor_cache = Default(), {}
    anchors = model_anchors.get_anchors(Default().IMAGE_SHAPE)
    assert anchors.shape == (261888, 4)
    assert model_anchors.anchors.shape == (261888, 4)


def test_callable_and_small_backbones(tmp_path):
    from mrcnn.backbone import small_backbone_graph

    class Callable(TinyConfig):
        BACKBONE = staticmethod(lambda image, stage5, train_bn: small_backbone_graph(image))

    class Small(TinyConfig):
        BACKBONE = "small"
    for config in (Callable(), Small()):
        model = modellib.MaskRCNN("inference", config, str(tmp_path))
        assert model.keras_model.get_layer("small_conv5b").output.shape[-1] == 128
        (r,) = model.detect([np.zeros((128, 128, 3), np.uint8)])
        assert r["masks"].shape[:2] == (128, 128)


def test_image_size_must_be_a_multiple_of_64(tmp_path):
    class Odd(TinyConfig):
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = 100
    with pytest.raises(ValueError, match="dividable by 2 at least 6 times"):
        modellib.MaskRCNN("inference", Odd(), str(tmp_path))


# ---------------------------------------------------------------------------- weight files
class CocoConfig(Config):
    NAME = "coco"
    NUM_CLASSES = 81
    IMAGES_PER_GPU = 1
    IMAGE_MIN_DIM = IMAGE_MAX_DIM = 128


class SixClassConfig(TinyConfig):
    NAME = "wbc"
    NUM_CLASSES = 6


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco") / "mask_rcnn_coco.h5"
    written = write_matterport_h5(str(path), backbone="resnet101", num_classes=81, seed=3)
    return str(path), written


def _values(model):
    return {name: [v.numpy() for _, v in pairs] for name, pairs in model_weight_map(model)}


def test_matterport_coco_file_loads_by_name_with_every_tensor_equal(tmp_path, coco_file):
    path, written = coco_file
    model = modellib.MaskRCNN("inference", CocoConfig(), str(tmp_path))
    model.load_weights(path, by_name=True)
    loaded = _values(model.keras_model)
    assert set(loaded) == set(written) and len(loaded) == 233
    for name, arrays in written.items():
        for got, want in zip(loaded[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert model.epoch == 0
    assert read_settings(path) is None          # Matterport's files carry no settings


def test_coco_file_into_six_class_resnet50_with_the_usual_exclude(tmp_path, coco_file):
    path, written = coco_file
    model = modellib.MaskRCNN("training", SixClassConfig(), str(tmp_path))
    before = _values(model.keras_model)
    summary = model.load_weights(path, by_name=True, exclude=EXCLUDE)
    after = _values(model.keras_model)
    for name in ["conv1", "res4f_branch2c", "fpn_p2", "rpn_model", "mrcnn_mask_conv1"]:
        for got, want in zip(after[name], written[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)
    for name in ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]:
        for got, kept in zip(after[name], before[name]):
            np.testing.assert_array_equal(got, kept, err_msg=name)
    assert "res4g_branch2a" in summary["skipped"]        # ResNet101-only blocks


def test_class_count_mismatch_without_exclude_is_a_clear_error(tmp_path, coco_file):
    path, _ = coco_file
    model = modellib.MaskRCNN("inference", SixClassConfig(), str(tmp_path))
    before = _values(model.keras_model)
    with pytest.raises(WeightsFileError) as err:
        model.load_weights(path, by_name=True)
    message = str(err.value)
    assert "exclude" in message and "mrcnn_" in message
    assert ("(1024, 6)" in message and "(1024, 81)" in message) or (
        "(1, 1, 256, 6)" in message and "(1, 1, 256, 81)" in message) or (
        "(1024, 24)" in message and "(1024, 324)" in message)
    after = _values(model.keras_model)
    for name in before:                                   # nothing was half-loaded
        for a, b in zip(before[name], after[name]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["chunked", "full_model"])
def test_other_keras2_layouts_load(tmp_path, variant):
    path = str(tmp_path / "w.h5")
    if variant == "chunked":
        written = write_matterport_h5(path, backbone="resnet50", num_classes=4, seed=5,
                                      chunk_layer_names=True)
    else:
        written = write_full_model_h5(path, backbone="resnet50", num_classes=4, seed=5)
    model = modellib.MaskRCNN("inference", TinyConfig(), str(tmp_path))
    model.load_weights(path, by_name=True)
    loaded = _values(model.keras_model)
    np.testing.assert_array_equal(loaded["mrcnn_mask"][0], written["mrcnn_mask"][0])
    np.testing.assert_array_equal(loaded["rpn_model"][2], written["rpn_model"][2])


def test_bad_weight_files_get_clear_errors(tmp_path, inference_model):
    with pytest.raises(FileNotFoundError, match="not found"):
        inference_model.load_weights(str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"<html>not weights</html>")
    with pytest.raises(WeightsFileError, match="not a readable HDF5"):
        inference_model.load_weights(str(junk))
    good = tmp_path / "mask_rcnn_coco.h5"
    write_matterport_h5(str(good), backbone="resnet50", num_classes=4, only=["conv1"])
    truncated = tmp_path / "truncated_coco.h5"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(WeightsFileError, match="truncated download"):
        inference_model.load_weights(str(truncated))
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(WeightsFileError, match="no 'layer_names'"):
        inference_model.load_weights(str(empty))


def test_save_then_load_gives_identical_detections_and_matterport_layout(tmp_path,
                                                                         inference_model):
    path = str(tmp_path / "mask_rcnn_tiny_0001.h5")
    inference_model.save_weights(path)
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f["res2a_branch2a"].attrs["weight_names"]] == [
            "res2a_branch2a/kernel:0", "res2a_branch2a/bias:0"]
        assert f["res2a_branch2a/res2a_branch2a/kernel:0"].shape == (1, 1, 64, 64)
        assert f["bn2a_branch2a/bn2a_branch2a/moving_variance:0"].shape == (64,)
        assert f["rpn_model/rpn_conv_shared/kernel:0"].shape == (3, 3, 256, 512)
        assert f["mrcnn_class_conv1/mrcnn_class_conv1/kernel:0"].shape == (7, 7, 256, 1024)
        assert b"fpn_p6" in list(f.attrs["layer_names"])
    # The file carries the configuration (config.to_dict() unless checkpoint_settings).
    assert read_settings(path)["IMAGE_MAX_DIM"] == TinyConfig.IMAGE_MAX_DIM
    inference_model.checkpoint_settings = {"LAYERS": "heads"}
    try:
        inference_model.save_weights(str(tmp_path / "with_settings.h5"))
    finally:
        inference_model.checkpoint_settings = None
    assert read_settings(tmp_path / "with_settings.h5") == {"LAYERS": "heads"}
    from wbc.files import is_temp_name
    assert not [f for f in os.listdir(tmp_path) if is_temp_name(f)]
    other = modellib.MaskRCNN("inference", TinyConfig(), str(tmp_path / "logs"))
    other.load_weights(path, by_name=False)
    image = np.random.default_rng(1).integers(0, 255, (128, 128, 3)).astype(np.uint8)
    a, b = inference_model.detect([image])[0], other.detect([image])[0]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------------- training
def test_training_writes_checkpoints_and_resumes_at_the_next_epoch(tmp_path, shapes):
    config = TinyConfig()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    history = model.train(shapes[0], shapes[1], 0.001, 1, "heads", seed=0, progress=False)
    assert [h["epoch"] for h in history] == [1] and model.epoch == 1
    last = model.find_last()
    assert os.path.basename(last) == "mask_rcnn_tiny_0001.h5"
    assert last[1] == str(last) and os.path.isfile(last[1])           # old find_last()[1]
    resumed = modellib.MaskRCNN("training", config, str(tmp_path))
    resumed.load_weights(resumed.find_last(), by_name=True)
    assert resumed.epoch == 1 and resumed.log_dir == model.log_dir
    history = resumed.train(shapes[0], shapes[1], 0.001, 2, "3+", seed=0, progress=False)
    assert [h["epoch"] for h in history] == [2]
    assert os.path.basename(resumed.find_last()) == "mask_rcnn_tiny_0002.h5"
    assert resumed.train(shapes[0], shapes[1], 0.001, 2, "3+", progress=False) == []
    with open(os.path.join(model.log_dir, "losses.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "val_loss", "mrcnn_mask_loss", "val_rpn_bbox_loss"} <= set(rows[0])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(model.log_dir))


def test_a_new_run_never_writes_into_an_existing_run_folder(tmp_path):
    model = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model.config, model.model_dir = TinyConfig(), str(tmp_path)
    model.set_log_dir()
    first = model.log_dir
    assert model.last_checkpoint is None and not os.path.exists(first)
    model.make_log_dir()
    assert os.path.isdir(first)
    checkpoint = os.path.join(first, "mask_rcnn_tiny_0007.h5")
    open(checkpoint, "wb").close()
    model.set_log_dir()                                  # the folder exists: the next minute
    second = model.log_dir
    assert second != first and not os.path.exists(second)
    assert os.path.basename(second) > os.path.basename(first)
    # Another run started in the same minute claims that name first: this one moves on.
    other = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    other.config, other.model_dir = TinyConfig(), str(tmp_path)
    other.set_log_dir()
    assert other.log_dir == second
    other.make_log_dir()
    model.make_log_dir()
    assert os.path.isdir(model.log_dir) and model.log_dir not in (first, second)
    assert model.checkpoint_path.startswith(model.log_dir + os.sep)
    model.set_log_dir(checkpoint)                        # a checkpoint resumes its own run
    assert (model.log_dir, model.epoch, model.last_checkpoint) == (first, 7, checkpoint)
    model.make_log_dir()
    assert model.log_dir == first
    # ... also when it was copied elsewhere, even if model_dir has a run of the same minute.
    elsewhere = tmp_path / "copied" / os.path.basename(first)
    elsewhere.mkdir(parents=True)
    copy = str(elsewhere / "mask_rcnn_tiny_0007.h5")
    open(copy, "wb").close()
    model.set_log_dir(copy)
    assert model.log_dir == str(elsewhere) and model.epoch == 7
    assert model.checkpoint_path.startswith(str(elsewhere) + os.sep)
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)                              # a bare file name, run from its folder
        model.set_log_dir("mask_rcnn_tiny_0007.h5")
    finally:
        os.chdir(cwd)
    assert model.log_dir == str(elsewhere)


def test_find_last_errors(tmp_path, inference_model):
    model = modellib.MaskRCNN.__new__(modellib.MaskRCNN)
    model.config, model.model_dir = TinyConfig(), str(tmp_path)
    with pytest.raises(FileNotFoundError, match="Could not find model directory"):
        model.find_last()
    (tmp_path / "tiny20260101T0000").mkdir()
    with pytest.raises(FileNotFoundError, match="Could not find weight files"):
        model.find_last()


def test_set_trainable_layer_groups(tmp_path):
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    model.set_trainable(modellib.LAYER_REGEX["heads"], verbose=0)
    km = model.keras_model
    assert not km.get_layer("res5a_branch2a").trainable
    assert km.get_layer("fpn_p2").trainable and km.get_layer("mrcnn_mask").trainable
    assert km.get_layer("rpn_model").get_layer("rpn_conv_shared").trainable
    model.set_trainable(modellib.LAYER_REGEX["3+"], verbose=0)
    assert km.get_layer("res3a_branch2a").trainable and not km.get_layer("res2a_branch2a").trainable
    assert not km.get_layer("conv1").trainable


def test_a_tiny_model_lowers_its_loss(tmp_path):
    class Learn(TinyConfig):
        STEPS_PER_EPOCH = 10
    model = modellib.MaskRCNN("training", Learn(), str(tmp_path))
    history = model.train(ShapesDataset(40, 128, seed=1), ShapesDataset(10, 128, seed=2), 0.01,
                          6, "all", seed=0, progress=False)
    first, last = history[0]["loss"], np.mean([h["loss"] for h in history[-2:]])
    assert last < 0.7 * first, [round(h["loss"], 3) for h in history]
    assert history[-1]["rpn_class_loss"] < history[0]["rpn_class_loss"]
    assert model.last_checkpoint == os.path.join(model.log_dir, "mask_rcnn_tiny_0006.h5")


# ---------------------------------------------------------------------------- P3 start, precision
class P3Config(TinyConfig):
    PYRAMID_MIN_LEVEL = 3


def test_pyramid_from_p3_skips_p2_but_keeps_the_file_layout(tmp_path, coco_file):
    path, written = coco_file
    model = modellib.MaskRCNN("inference", P3Config(), str(tmp_path))
    graph = {layer.name for layer in model.keras_model.layers}
    assert "fpn_p2" not in graph and "fpn_p3" in graph            # P2 is not computed
    anchors = model.get_anchors(P3Config().IMAGE_SHAPE)
    assert len(anchors) == 3 * (16 ** 2 + 8 ** 2 + 4 ** 2 + 2 ** 2)   # P3..P6 of 128 px
    # ...but its layers are in every weights file: Matterport's file loads tensor for tensor,
    # and a P3 model's checkpoint loads exactly (by_name=False) into a P2 model and back.
    class CocoP3(CocoConfig):
        PYRAMID_MIN_LEVEL = 3
    coco = modellib.MaskRCNN("inference", CocoP3(), str(tmp_path))
    coco.load_weights(path, by_name=False)
    loaded = _values(coco.keras_model)
    assert set(loaded) == set(written)
    for got, want in zip(loaded["fpn_p2"] + loaded["fpn_c2p2"],
                         written["fpn_p2"] + written["fpn_c2p2"]):
        np.testing.assert_array_equal(got, want)
    saved = str(tmp_path / "p3.h5")
    model.save_weights(saved)
    p2_model = modellib.MaskRCNN("inference", TinyConfig(), str(tmp_path))
    p2_model.load_weights(saved, by_name=False)
    for name, arrays in _values(model.keras_model).items():
        for got, want in zip(_values(p2_model.keras_model)[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)
    (r,) = model.detect([np.zeros((128, 128, 3), np.uint8)])
    assert r["masks"].shape[:2] == (128, 128)


def test_pyramid_from_p3_trains(tmp_path, shapes):
    model = modellib.MaskRCNN("training", P3Config(), str(tmp_path))
    history = model.train(shapes[0], shapes[1], 0.001, epochs=1, layers="all", progress=False)
    assert np.isfinite(history[0]["loss"])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compute_dtype_keeps_weights_boxes_and_predictions_float32(tmp_path, dtype):
    class Precise(TinyConfig):
        COMPUTE_DTYPE = dtype
    model = modellib.MaskRCNN("inference", Precise(), str(tmp_path)).keras_model
    assert model.get_layer("res3a_branch2a").compute_dtype == dtype
    assert model.get_layer("fpn_p3").compute_dtype == dtype
    for name in ["ROI", "roi_align_classifier", "mrcnn_class_logits", "mrcnn_bbox_fc",
                 "mrcnn_mask", "mrcnn_detection"]:
        assert model.get_layer(name).compute_dtype == "float32", name
    assert {v.dtype for v in model.weights} == {"float32"}


def test_bfloat16_computes_what_float32_computes_to_bfloat16_precision(tmp_path):
    class Float32(TinyConfig):
        COMPUTE_DTYPE = "float32"

    class BFloat16(TinyConfig):
        COMPUTE_DTYPE = "bfloat16"
    full = modellib.MaskRCNN("inference", Float32(), str(tmp_path))
    half = modellib.MaskRCNN("inference", BFloat16(), str(tmp_path))
    half.keras_model.set_weights(full.keras_model.get_weights())
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3)).astype(np.uint8)
    molded, metas, _ = full.mold_inputs([image])
    anchors = full.get_anchors(molded[0].shape)[None]
    outputs_full = full._predict(molded, metas, anchors)
    outputs_half = half._predict(molded, metas, anchors)
    # Per-anchor outputs (the proposals themselves may come in another order). Untrained
    # weights give RPN deltas up to about 60: compare relative to float32.
    for index in (5, 6):     # RPN probabilities, RPN deltas
        got, want = outputs_half[index].ravel(), outputs_full[index].ravel()
        assert got.dtype == np.float32
        assert np.corrcoef(got, want)[0, 1] > 0.999
        assert np.median(np.abs(got - want) / (np.abs(want) + 1e-6)) < 0.02


def test_auto_precision_follows_the_cpu_flags(tmp_path):
    from mrcnn import precision
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert precision.cpu_has_native_bfloat16.__wrapped__(str(flags))
    flags.write_text("processor: 0\nflags\t\t: fpu avx2 fma\n")
    assert not precision.cpu_has_native_bfloat16.__wrapped__(str(flags))
    assert not precision.cpu_has_native_bfloat16.__wrapped__(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="COMPUTE_DTYPE"):
        precision.compute_dtype(type("C", (), {"COMPUTE_DTYPE": "float16"})())


def test_loss_weights_scale_each_loss_in_the_total(tmp_path, shapes):
    """WBCConfig weights the classifier loss 3x; the total must be the weighted sum."""
    class Weighted(TinyConfig):
        BACKBONE = "small"
        WEIGHT_DECAY = 0.
        LOSS_WEIGHTS = dict(TinyConfig.LOSS_WEIGHTS, mrcnn_class_loss=3., rpn_bbox_loss=0.5)
    config = Weighted()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    batch = next(TrainingInput(shapes[0], config, seed=0).batches())
    _, eval_step = model._make_steps(keras.optimizers.SGD(0.01))
    total, losses = eval_step(tuple(tf.constant(x) for x in batch))
    weights = [config.LOSS_WEIGHTS[name] for name in modellib.LOSS_NAMES]
    assert float(losses[modellib.LOSS_NAMES.index("mrcnn_class_loss")]) > 0
    assert float(total) == pytest.approx(sum(w * float(x) for w, x in zip(weights, losses)),
                                         rel=1e-5)


@pytest.mark.parametrize("mode", ["matterport", "sgd"])
def test_weight_decay_term_in_the_total_follows_its_mode(tmp_path, shapes, mode):
    """total = sum of the losses + the L2 term: Matterport's wd * sum(w^2) / size(w) per
    tensor, or SGD's (wd / 2) * sum(w^2), over every trainable weight but BN gamma/beta."""
    class Decayed(TinyConfig):
        BACKBONE = "small"
        WEIGHT_DECAY = 1.     # large, so that the term stands well above float32 rounding
        WEIGHT_DECAY_MODE = mode
    config = Decayed()
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    batch = next(TrainingInput(shapes[0], config, seed=0).batches())
    _, eval_step = model._make_steps(keras.optimizers.SGD(0.01))
    total, losses = eval_step(tuple(tf.constant(x) for x in batch))
    weights = [np.asarray(v, np.float64) for v in model.keras_model.trainable_variables
               if "gamma" not in v.path and "beta" not in v.path]
    if mode == "sgd":
        penalty = 0.5 * sum(np.sum(w ** 2) for w in weights)
    else:
        penalty = sum(np.sum(w ** 2) / w.size for w in weights)
    assert penalty > 1e-2
    assert float(total) - sum(float(x) for x in losses) == pytest.approx(penalty, rel=1e-4)


def test_unknown_weight_decay_mode_is_refused(tmp_path, shapes):
    class Typo(TinyConfig):
        BACKBONE = "small"
        WEIGHT_DECAY_MODE = "adamw"
    model = modellib.MaskRCNN("training", Typo(), str(tmp_path))
    with pytest.raises(ValueError, match="WEIGHT_DECAY_MODE"):
        model._make_steps(keras.optimizers.SGD(0.01))



def test_classifier_dropout_acts_in_training_only_and_keeps_the_weights(tmp_path):
    from keras import layers as KL
    from mrcnn.heads import fpn_classifier_graph

    class Dropped(TinyConfig):
        BACKBONE = "small"
        CLASSIFIER_DROPOUT = 0.5
    dropped = modellib.MaskRCNN("training", Dropped(), str(tmp_path / "a"))
    plain = modellib.MaskRCNN("training", type("Plain", (Dropped,), {"CLASSIFIER_DROPOUT": 0.})(),
                              str(tmp_path / "b"))
    assert "mrcnn_class_dropout2" in [layer.name for layer in dropped.keras_model.layers]
    assert (sorted((w.path, tuple(w.shape)) for w in dropped.keras_model.weights)
            == sorted((w.path, tuple(w.shape)) for w in plain.keras_model.weights))
    # The head alone on fixed ROIs (the training graph samples its ROIs anew on every call).
    rois, meta = KL.Input((3, 4)), KL.Input((18,))
    maps = [KL.Input((32 // 2 ** i, 32 // 2 ** i, 8)) for i in range(4)]
    heads = [keras.Model([rois, meta] + maps, fpn_classifier_graph(
        rois, maps, meta, 7, 6, train_bn=False, fc_layers_size=64, dropout=rate)[0])
        for rate in (0.5, 0.)]
    heads[1].set_weights(heads[0].get_weights())
    rng = np.random.default_rng(0)
    meta_value = np.zeros((1, 18), np.float32)
    meta_value[0, 4:7] = meta_value[0, 7:10] = [128, 128, 3]   # image and window shapes
    x = [np.array([[[0.1, 0.1, 0.6, 0.6], [0.2, 0.3, 0.9, 0.8], [0, 0, 1, 1]]], np.float32),
         meta_value] + [rng.random((1,) + tuple(m.shape[1:]), np.float32) for m in maps]
    train = [heads[0](x, training=True).numpy() for _ in range(2)]
    assert not np.allclose(*train)
    np.testing.assert_array_equal(heads[0](x, training=False), heads[1](x, training=False))
