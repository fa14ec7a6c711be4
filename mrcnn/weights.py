"""Keras-2 HDF5 weight files (Matterport's `mask_rcnn_coco.h5` and checkpoints), read and
written with h5py alone: nothing in a file is ever deserialised as code.

Layout (what Keras 2's `save_weights` wrote and what we write):
  root attrs   layer_names (or layer_names0, layer_names1, ...), backend, keras_version;
               ours add `settings`: JSON of the training configuration (read_settings)
  /<layer>     one group per layer; attr weight_names = ["<layer>/kernel:0", ...]
  /<layer>/<weight_name>   one dataset per weight (the "/" nests: res2a/res2a/kernel:0)
  /rpn_model/rpn_conv_shared/kernel:0 ...  the nested RPN model's weights
A full-model file keeps the same tree under /model_weights.

Only numeric datasets and string attributes are read: no pickle, no model config, no Lambda
bytecode, so loading a file never runs code from it. Files are written to a temporary name
and renamed, so a crash or a full disk never leaves a half file under the final name.
"""
import errno
import json
import os
import shutil

import h5py
import keras
import numpy as np

from mrcnn.durable import create_temporary, fsync_folder

# Order of a layer's tensors in the file (Keras 2: trainable then non-trainable).
_WEIGHT_ORDER = ["kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"]
COCO_FILE_BYTES = 257_557_808  # size of Matterport's mask_rcnn_coco.h5 release file


class WeightsFileError(ValueError):
    """A weight file that cannot be read or does not fit the model; the message says why."""


class WeightsWriteError(OSError):
    """A weights file could not be written (disk full, no permission, ...). Nothing was
    written under its name: an earlier file at that path is unchanged. errno is ENOSPC when
    the disk is full."""

    def __str__(self):
        return self.strerror or super().__str__()


def _ordered_variables(layer):
    def rank(v):
        name = v.name.split("/")[-1].split(":")[0]
        return _WEIGHT_ORDER.index(name) if name in _WEIGHT_ORDER else len(_WEIGHT_ORDER)
    return sorted(layer.weights, key=rank)


class _UnusedLayers:
    """Layers a model builds but does not apply (held outside Keras' layer tracking)."""

    def __init__(self, layers, before):
        self.layers, self.before = list(layers), before


def attach_unused_layers(keras_model, layers, before):
    """Record built-but-unapplied layers (e.g. fpn_p2 when the pyramid starts at P3) so that
    weight files still hold them, listed before the layer named `before`. Returns the model."""
    keras_model._mrcnn_unused_layers = _UnusedLayers(layers, before)
    return keras_model


def _layers_in_file_order(keras_model):
    unused = getattr(keras_model, "_mrcnn_unused_layers", None)
    for layer in keras_model.layers:
        if unused is not None and layer.name == unused.before:
            yield from unused.layers
        yield layer


def model_weight_map(keras_model):
    """[(top-level layer name, [(weight name as stored, variable), ...])] for weighted layers,
    the unused ones (attach_unused_layers) included.

    Weight names follow Keras 2: "<layer>/<var>:0"; inside the nested `rpn_model` the inner
    layer's name is used (rpn_conv_shared/kernel:0).
    """
    out = []
    for layer in _layers_in_file_order(keras_model):
        inner = layer.layers if isinstance(layer, keras.Model) else [layer]
        pairs = [(f"{sub.name}/{v.name.split('/')[-1].split(':')[0]}:0", v)
                 for sub in inner for v in _ordered_variables(sub)]
        if pairs:
            out.append((layer.name, pairs))
    return out


def _decode(values):
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _file_layer_names(group):
    if "layer_names" in group.attrs:
        return _decode(group.attrs["layer_names"])
    names, i = [], 0
    while f"layer_names{i}" in group.attrs:
        names += _decode(group.attrs[f"layer_names{i}"])
        i += 1
    return names


def _weights_group(f, path):
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    if "model_weights" in f:
        return f["model_weights"]
    raise WeightsFileError(f"{path}: HDF5 file without Keras weights (no 'layer_names' "
                           "attribute and no 'model_weights' group)")


def read_settings(path):
    """The `settings` dict that save_weights stored in the file, or None (a file of Matterport's
    or Keras', one written before settings existed, or one that cannot be read)."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            value = f.attrs.get("settings")
        settings = json.loads(value.decode() if isinstance(value, bytes) else value)
    except (OSError, TypeError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def read_weight_file(path):
    """{layer name: [(weight name, np.ndarray), ...]} of every weighted layer in the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        size = os.path.getsize(path)
        hint = (f" (truncated download? the COCO file is {COCO_FILE_BYTES:,} bytes)"
                if size < COCO_FILE_BYTES and "coco" in os.path.basename(path).lower() else "")
        raise WeightsFileError(f"{path}: not a readable HDF5 weights file, {size:,} bytes"
                               f"{hint}: {exc}") from None
    with f:
        try:
            group = _weights_group(f, path)
            layers = {}
            for name in _file_layer_names(group):
                g = group[name]
                weight_names = _decode(g.attrs.get("weight_names", []))
                if weight_names:
                    layers[name] = [(w, _numeric(g[w], path, name, w)) for w in weight_names]
            return layers
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, WeightsFileError):
                raise
            raise WeightsFileError(f"{path}: damaged weights file ({exc})") from None


def _numeric(dataset, path, layer, weight):
    """A dataset's values as a numeric array; WeightsFileError for anything else (strings,
    opaque bytes, compound or object types are not weights)."""
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiub":
        kind = getattr(getattr(dataset, "dtype", None), "kind", type(dataset).__name__)
        raise WeightsFileError(f"{path}: layer '{layer}' weight {weight} is not numeric data "
                               f"({kind}); not a weights file of this tool or Matterport's")
    return np.asarray(dataset[()])


def load_weights_into(keras_model, path, by_name=True, exclude=()):
    """Load a Keras-2 HDF5 file into keras_model, matching layers by name.

    by_name=True: file layers without a match are skipped, model layers missing in the file
    keep their values. by_name=False: the file must hold exactly the model's weighted layers.
    Everything is checked before anything is assigned, so a failed load changes nothing.
    Returns {"loaded": [...], "skipped": [...] (in file only), "missing": [...] (model only)}.
    """
    exclude = set(exclude or ())
    file_layers = read_weight_file(path)
    model_layers = [(n, p) for n, p in model_weight_map(keras_model) if n not in exclude]
    model_names = {n for n, _ in model_layers}
    if not by_name:
        extra = sorted(set(file_layers) - model_names - exclude)
        absent = sorted(model_names - set(file_layers))
        if extra or absent:
            raise WeightsFileError(
                f"{path} does not hold this model's layers (in file only: {extra[:5]}, "
                f"in model only: {absent[:5]}); use by_name=True with exclude=[...]")
    if by_name and model_names and not set(file_layers) & model_names:
        examples = "".join(f", {n}" for n in sorted(file_layers)[:3])
        raise WeightsFileError(
            f"{path}: holds none of this model's layers ({len(file_layers)} weighted layers in "
            f"the file{examples}); it is not a weights file of this model")
    assignments = []
    for name, pairs in model_layers:
        if name not in file_layers:
            continue
        saved = file_layers[name]
        if len(saved) != len(pairs):
            raise WeightsFileError(f"{path}: layer '{name}' expects {len(pairs)} weights but the "
                                   f"file has {len(saved)}; load with exclude=['{name}']")
        for (wname, var), (_, value) in zip(pairs, saved):
            if tuple(var.shape) != value.shape:
                raise WeightsFileError(
                    f"{path}: layer '{name}' weight {wname} has shape {tuple(var.shape)} in the "
                    f"model but {value.shape} in the file (different NUM_CLASSES or backbone?); "
                    f"load with exclude=['{name}', ...] to keep it initialised instead")
            assignments.append((var, value))
    for var, value in assignments:
        var.assign(value.astype(var.dtype))
    return {"loaded": [n for n, _ in model_layers if n in file_layers],
            "skipped": sorted(set(file_layers) - model_names),
            "missing": [n for n, _ in model_layers if n not in file_layers]}


def _bytes_array(names):
    return np.array([n.encode("utf8") for n in names], dtype=f"S{max([len(n) for n in names] + [1])}")


def _disk_full(exc):
    """HDF5 reports a full disk in its message text only (no errno on the exception)."""
    return (getattr(exc, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
            or "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc))


def _write_error(exc, path, folder, nbytes):
    if _disk_full(exc):
        try:
            free = f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free, "
        except OSError:
            free = ""
        reason, code = (f"the disk is full: {free}the file needs about {nbytes / 1e6:,.0f} MB",
                        errno.ENOSPC)
    else:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        reason, code = getattr(exc, "strerror", None) or first, getattr(exc, "errno", None)
    return WeightsWriteError(code or errno.EIO, f"{path}: could not write the weights file "
                             f"({reason}); nothing was written under that name")


def save_weights(keras_model, path, settings=None):
    """Write the model's weights in Keras-2 layout, atomically: a temporary file in the same
    folder, fsync, rename, fsync of the folder. On failure the temporary file is removed, an
    earlier file at `path` is unchanged and WeightsWriteError says why (disk full: ENOSPC).
    `settings` (a dict, e.g. the configuration) goes into the root attribute `settings` as
    JSON, which Keras and Matterport ignore, so the file carries it wherever it is copied."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    nbytes = sum(int(np.prod(v.shape)) * 4 for _, pairs in model_weight_map(keras_model)
                 for _, v in pairs)
    tmp = None
    try:
        fd, tmp = create_temporary(path)     # h5py re-creates it; permissions as open()'s
        os.close(fd)
        weighted = dict(model_weight_map(keras_model))
        with h5py.File(tmp, "w") as f:
            names = [layer.name for layer in _layers_in_file_order(keras_model)]
            f.attrs["layer_names"] = _bytes_array(names)
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = keras.__version__.encode()
            if settings is not None:
                f.attrs["settings"] = json.dumps(settings, default=str).encode()
            for name in names:
                g = f.create_group(name)
                pairs = weighted.get(name, [])
                g.attrs["weight_names"] = _bytes_array([w for w, _ in pairs]) if pairs else np.zeros(0)
                for wname, var in pairs:
                    g.create_dataset(wname, data=np.asarray(var.numpy()))
            f.flush()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WeightsWriteError):
            raise _write_error(exc, path, folder, nbytes) from exc
        raise
    fsync_folder(folder)
