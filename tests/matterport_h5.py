"""Synthetic Matterport Mask R-CNN weight files, written with h5py only.

The real ``mask_rcnn_coco.h5`` cannot be downloaded in the test environment, so this module writes
files with the same structure, built from the facts in ``shared/spec/matterport-compat.md`` §5-§6.
Values are random. Importing it does not pull in TensorFlow or Keras.

Layout of a Keras-2 ``save_weights`` file (``write_matterport_h5``)::

    /                                    attrs: layer_names  (numpy ``S`` array, every layer, weightless ones too)
                                                backend      (b"tensorflow")
                                                keras_version (b"2.1.6")
    /conv1                               attrs: weight_names = [b"conv1/kernel:0", b"conv1/bias:0"]
    /conv1/conv1/kernel:0                dataset (7, 7, 3, 64) float32     <- doubled prefix
    /conv1/conv1/bias:0                  dataset (64,)
    /bn_conv1/bn_conv1/{gamma,beta,moving_mean,moving_variance}:0
    /mrcnn_class_conv1/mrcnn_class_conv1/kernel:0   TimeDistributed: also a doubled prefix
    /rpn_model                           attrs: weight_names = [b"rpn_conv_shared/kernel:0", ...]
    /rpn_model/rpn_conv_shared/kernel:0  nested Model: a single prefix
    /input_image                         empty group, weight_names = empty float64 array

Each dataset sits at ``<layer group>/<weight name>``. The weight name is the TF-1 variable name, which
contains "/", so h5py creates the intermediate groups. Matterport's readers use only a layer's group and
the order of its ``weight_names``. They ignore the dataset names.

Attr encodings copy what Keras 2 produced through h5py 2.x. Rewriting a real file with h5py 3 would
change them, so the fixture sets them explicitly:

* ``layer_names`` / ``weight_names`` are fixed-length ``S`` arrays. h5py >= 3 reads them back as numpy
  bytes, which need ``.decode("utf8")``.
* ``backend`` / ``keras_version`` are variable-length ASCII strings, because h5py wrote a Python
  ``bytes`` scalar that way. h5py >= 3 reads them back as ``str``. That is why Keras 2's
  ``.decode`` crashed (matterport #2594). A loader must accept both ``str`` and ``bytes``.
* An empty ``weight_names`` (weightless layer) is ``np.asarray([])``, i.e. an empty float64 array.
* With ``chunk_layer_names=True`` the root has ``layer_names0``, ``layer_names1``, ... instead of
  ``layer_names``, like the Keras 2 writer does for attrs over 64 KiB. Here the chunks are small (100
  names by default), so that the reader's chunk-joining code gets exercised.

``write_full_model_h5`` writes the layout of a full-model ``model.save``: the same tree, under a
``model_weights`` group, with no ``layer_names`` on the root.

The weighted layers follow the build order of Matterport's code (§5). The weightless names are a
plausible interleaving with Keras-2 auto names (``activation_N``, ``add_N``, ...). They combine the
training graph with the inference-only names ``input_anchors`` and ``mrcnn_detection``, so a loader
sees both kinds. They are not a copy of the real file's ``layer_names`` order.
"""

import json

import h5py
import numpy as np

BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")

_STAGE4_IDENTITY_BLOCKS = {"resnet50": 5, "resnet101": 22}


def _conv(name, kernel_shape):
    return [(f"{name}/kernel:0", tuple(kernel_shape)), (f"{name}/bias:0", (kernel_shape[-1],))]


def _dense(name, n_in, n_out):
    return [(f"{name}/kernel:0", (n_in, n_out)), (f"{name}/bias:0", (n_out,))]


def _bn(name, channels):
    return [(f"{name}/{w}:0", (channels,)) for w in BN_WEIGHTS]


class _AutoNames:
    """Keras-2 style automatic names: activation_1, activation_2, add_1, ..."""

    def __init__(self):
        self.counts = {}

    def __call__(self, prefix):
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}_{self.counts[prefix]}"


def _all_layers(backbone, num_classes, anchors_per_location, channels):
    """Every layer of the model, in order, as ``(name, weight_specs)``. Weightless layers get ``[]``."""
    if backbone not in _STAGE4_IDENTITY_BLOCKS:
        raise ValueError(f"backbone must be one of {sorted(_STAGE4_IDENTITY_BLOCKS)}, got {backbone!r}")
    auto = _AutoNames()
    L = []  # noqa: N806  (short local name, lots of appends)

    def weightless(*names):
        L.extend((n, []) for n in names)

    weightless("input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
               "input_gt_class_ids", "input_gt_boxes", auto("lambda"), "input_gt_masks")

    # Stem.
    weightless(auto("zero_padding2d"))
    L.append(("conv1", _conv("conv1", (7, 7, channels, 64))))
    L.append(("bn_conv1", _bn("bn_conv1", 64)))
    weightless(auto("activation"), auto("max_pooling2d"))

    # Stages 2-5. Each block adds its layers in creation order: 2a, bn, relu, 2b, bn, relu, 2c, bn,
    # then (block "a" only) branch1 and its bn, then Add and the named output ReLU.
    stages = [
        (2, (64, 64, 256), "abc"),
        (3, (128, 128, 512), "abcd"),
        (4, (256, 256, 1024), "a" + "".join(chr(98 + i) for i in range(_STAGE4_IDENTITY_BLOCKS[backbone]))),
        (5, (512, 512, 2048), "abc"),
    ]
    depth = 64  # input channels of the current block
    for stage, (f1, f2, f3), blocks in stages:
        for block in blocks:
            res, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
            L.append((res + "2a", _conv(res + "2a", (1, 1, depth, f1))))
            L.append((bn + "2a", _bn(bn + "2a", f1)))
            weightless(auto("activation"))
            L.append((res + "2b", _conv(res + "2b", (3, 3, f1, f2))))
            L.append((bn + "2b", _bn(bn + "2b", f2)))
            weightless(auto("activation"))
            L.append((res + "2c", _conv(res + "2c", (1, 1, f2, f3))))
            L.append((bn + "2c", _bn(bn + "2c", f3)))
            if block == "a":
                L.append((res + "1", _conv(res + "1", (1, 1, depth, f3))))
                L.append((bn + "1", _bn(bn + "1", f3)))
            weightless(auto("add"), f"res{stage}{block}_out")
            depth = f3

    # FPN. Matterport creates each upsampling layer before the lateral 1x1 conv it is added to.
    L.append(("fpn_c5p5", _conv("fpn_c5p5", (1, 1, 2048, 256))))
    for hi, lo, c_in in ((5, 4, 1024), (4, 3, 512), (3, 2, 256)):
        weightless(f"fpn_p{hi}upsampled")
        L.append((f"fpn_c{lo}p{lo}", _conv(f"fpn_c{lo}p{lo}", (1, 1, c_in, 256))))
        weightless(f"fpn_p{lo}add")
    for p in (2, 3, 4, 5):
        L.append((f"fpn_p{p}", _conv(f"fpn_p{p}", (3, 3, 256, 256))))
    weightless("fpn_p6", "anchors", "input_anchors")

    # RPN: a single nested Model, shared across P2-P6.
    a = anchors_per_location
    L.append(("rpn_model", _conv("rpn_conv_shared", (3, 3, 256, 512))
              + _conv("rpn_class_raw", (1, 1, 512, 2 * a))
              + _conv("rpn_bbox_pred", (1, 1, 512, 4 * a))))
    weightless("rpn_class_logits", "rpn_class", "rpn_bbox", "ROI", auto("lambda"), "proposal_targets")

    # Classifier head (all TimeDistributed).
    weightless("roi_align_classifier")
    L.append(("mrcnn_class_conv1", _conv("mrcnn_class_conv1", (7, 7, 256, 1024))))
    L.append(("mrcnn_class_bn1", _bn("mrcnn_class_bn1", 1024)))
    weightless(auto("activation"))
    L.append(("mrcnn_class_conv2", _conv("mrcnn_class_conv2", (1, 1, 1024, 1024))))
    L.append(("mrcnn_class_bn2", _bn("mrcnn_class_bn2", 1024)))
    weightless(auto("activation"), "pool_squeeze")
    L.append(("mrcnn_class_logits", _dense("mrcnn_class_logits", 1024, num_classes)))
    weightless("mrcnn_class")
    L.append(("mrcnn_bbox_fc", _dense("mrcnn_bbox_fc", 1024, 4 * num_classes)))
    weightless("mrcnn_bbox", "mrcnn_detection", auto("lambda"))

    # Mask head (all TimeDistributed). Keras stores a transposed-conv kernel as (kh, kw, out, in).
    weightless("roi_align_mask")
    for i in (1, 2, 3, 4):
        L.append((f"mrcnn_mask_conv{i}", _conv(f"mrcnn_mask_conv{i}", (3, 3, 256, 256))))
        L.append((f"mrcnn_mask_bn{i}", _bn(f"mrcnn_mask_bn{i}", 256)))
        weightless(auto("activation"))
    L.append(("mrcnn_mask_deconv", _conv("mrcnn_mask_deconv", (2, 2, 256, 256))))
    L.append(("mrcnn_mask", _conv("mrcnn_mask", (1, 1, 256, num_classes))))

    weightless("output_rois", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
               "mrcnn_bbox_loss", "mrcnn_mask_loss")
    return L


def matterport_layer_specs(backbone="resnet101", num_classes=81, anchors_per_location=3, channels=3):
    """Matterport's weighted layers in build order: ``[(layer_name, [(weight_name, shape), ...]), ...]``.

    ``weight_name`` is the string stored in the layer group's ``weight_names`` attr, e.g.
    ``"res2a_branch2a/kernel:0"``, or ``"rpn_conv_shared/kernel:0"`` for the ``rpn_model`` layer.
    resnet101 / 81 classes: 233 layers, 690 tensors, 64,158,584 parameters.
    """
    return [(n, w) for n, w in _all_layers(backbone, num_classes, anchors_per_location, channels) if w]


def all_layer_names(backbone="resnet101", num_classes=81, anchors_per_location=3, channels=3,
                    weightless_layers=True):
    """The ``layer_names`` attr the writers store: every layer, or only the weighted ones."""
    return [n for n, w in _all_layers(backbone, num_classes, anchors_per_location, channels)
            if w or weightless_layers]


def _values(rng, weight_name, shape):
    x = rng.standard_normal(shape, dtype=np.float32)
    if weight_name.endswith("/moving_variance:0"):
        return (1.0 + 0.1 * np.abs(x)).astype(np.float32)  # strictly positive
    if weight_name.endswith("/gamma:0"):
        return (1.0 + 0.01 * x).astype(np.float32)
    return (0.01 * x).astype(np.float32)


def _bytes_array(names):
    return np.array([n.encode("utf8") for n in names], dtype=bytes)  # fixed-length "S", like h5py 2


def _write_weights_group(group, backbone, num_classes, anchors_per_location, channels, seed,
                         chunk_layer_names, chunk_size, weightless_layers, keras_version, only):
    """Write Keras 2's ``save_weights_to_hdf5_group`` layout into ``group``. Returns the values dict."""
    layers = _all_layers(backbone, num_classes, anchors_per_location, channels)
    if only is not None:
        keep = set(only)
        unknown = keep - {n for n, w in layers if w}
        if unknown:
            raise ValueError(f"not weighted Matterport layers: {sorted(unknown)}")
        layers = [(n, w) for n, w in layers if not w or n in keep]
    if not weightless_layers:
        layers = [(n, w) for n, w in layers if w]

    names = _bytes_array([n for n, _ in layers])
    if chunk_layer_names:
        for i, start in enumerate(range(0, len(names), chunk_size)):
            group.attrs[f"layer_names{i}"] = names[start:start + chunk_size]
    else:
        group.attrs["layer_names"] = names
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = keras_version

    rng = np.random.default_rng(seed)
    written = {}
    for layer_name, weights in layers:
        g = group.create_group(layer_name)
        # Keras 2 writes the Python list as is, so an empty list becomes an empty float64 array.
        g.attrs["weight_names"] = _bytes_array([w for w, _ in weights]) if weights else np.asarray([])
        arrays = []
        for weight_name, shape in weights:
            value = _values(rng, weight_name, shape)
            g.create_dataset(weight_name, data=value)  # "/" in the name -> nested groups
            arrays.append(value)
        if weights:
            written[layer_name] = arrays
    return written


def write_matterport_h5(path, backbone="resnet101", num_classes=81, seed=0, chunk_layer_names=False,
                        weightless_layers=True, keras_version=b"2.1.6", *, anchors_per_location=3,
                        channels=3, chunk_size=100, only=None):
    """Write a Keras-2 ``save_weights`` file that looks like Matterport's (see the module docstring).

    ``only``: an iterable of weighted layer names. Only those weighted layers are written, both in
    ``layer_names`` and as groups (weightless names stay), which gives a small file that is still
    consistent, because every name in ``layer_names`` has a group. The default writes every layer, about 257 MB for
    resnet101. Returns ``{layer_name: [np.ndarray, ...]}`` (float32, in ``weight_names`` order), for the
    layers that were written.
    """
    with h5py.File(path, "w") as f:
        return _write_weights_group(f, backbone, num_classes, anchors_per_location, channels, seed,
                                    chunk_layer_names, chunk_size, weightless_layers, keras_version, only)


def write_full_model_h5(path, backbone="resnet101", num_classes=81, seed=0, chunk_layer_names=False,
                        weightless_layers=True, keras_version=b"2.1.6", *, anchors_per_location=3,
                        channels=3, chunk_size=100, only=None):
    """Same as ``write_matterport_h5``, laid out like a Keras-2 full-model ``model.save`` file.

    The root holds ``keras_version``, ``backend`` and a placeholder ``model_config``, but no
    ``layer_names``. The weights tree and its attrs sit in the ``model_weights`` group, which is what
    Matterport's loader falls back to.
    """
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(
            {"class_name": "Model", "config": {"name": "mask_rcnn"}}).encode("utf8")
        return _write_weights_group(f.create_group("model_weights"), backbone, num_classes,
                                    anchors_per_location, channels, seed, chunk_layer_names,
                                    chunk_size, weightless_layers, keras_version, only)
