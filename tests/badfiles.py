"""Tiny bad (and oddly shaped but valid) files for the bad-input tests, written on the spot.

Images: headers that claim huge sizes (PNG, BMP, TIFF, JPEG; no pixel data behind them),
16-bit, palette, RGBA, CMYK, multi-frame. Weight files: truncated, not HDF5, HDF5 without
Keras weights, non-numeric weights, a Keras 3 `.keras` zip with a Lambda layer, pickled
attributes. Files that would run code if deserialised create a sentinel file when they do
(`sentinel_code`), so a test can prove they were only read as data. Importing this module
does not import TensorFlow.
"""
import base64
import json
import marshal
import os
import pickle
import struct
import zlib

import h5py
import numpy as np
from PIL import Image


def _chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_claiming(path, width, height):
    """A valid-looking PNG whose header claims width x height RGB pixels (a few bytes of data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    return str(path)


def bmp_claiming(path, width, height):
    """A 1x1 BMP whose header is patched to claim width x height pixels."""
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path, format="BMP")
    data = bytearray(open(path, "rb").read())
    data[18:26] = struct.pack("<ii", width, height)
    open(path, "wb").write(bytes(data))
    return str(path)


def tiff_claiming(path, width, height):
    """A minimal little-endian grey TIFF whose one strip is 8 bytes but whose header claims
    width x height pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1),
               (278, 4, 1, height), (279, 4, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries)
    with open(path, "wb") as f:
        f.write(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 8)
    return str(path)


def jpeg_claiming(path, width, height):
    """A 1x1 JPEG whose SOF0 segment is patched to claim width x height pixels."""
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path, format="JPEG")
    data = bytearray(open(path, "rb").read())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    open(path, "wb").write(bytes(data))
    return str(path)


def png16_rgb(path, array):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    with open(path, "wb") as f:
        header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return str(path)


def multiframe_tiff(path, frames):
    """A TIFF with several RGB frames (uint8 arrays)."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="TIFF", save_all=True, append_images=images[1:])
    return str(path)


# ----------------------------------------------------------------------------- code payloads
def sentinel_code(sentinel):
    """Python source that creates the file `sentinel` (what a malicious file would run)."""
    return f"open({str(sentinel)!r}, 'w').write('executed')"


class _Payload:
    """Pickles to "exec(<code>)": unpickling it runs the code."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def pickle_payload(sentinel):
    """Bytes that create `sentinel` when passed to pickle.loads (and only then)."""
    return pickle.dumps(_Payload(sentinel_code(sentinel)))


def h5_with_pickles(path, sentinel, layer="mrcnn_mask", shape=None):
    """A Keras-2 style weights file whose attributes and one weight hold pickled objects.

    The root has a `pickled_config` attribute (opaque bytes of a pickle); layer `layer` has
    `weight_names` and its weight stored as opaque pickle bytes instead of numbers."""
    payload = pickle_payload(sentinel)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["pickled_config"] = np.void(payload)
        g = f.create_group(layer)
        name = f"{layer}/kernel:0"
        g.attrs["weight_names"] = np.array([name.encode()])
        g.attrs["pickled"] = np.void(payload)
        g.create_dataset(name, data=np.frombuffer(payload, dtype=f"V{len(payload)}"))
    return str(path)


def _lambda_config(sentinel):
    """Keras' serialised form of a Lambda layer whose function creates `sentinel`."""
    scope = {}
    exec("def fn(x):\n    " + sentinel_code(sentinel) + "\n    return x\n", scope)
    code = base64.b64encode(marshal.dumps(scope["fn"].__code__)).decode("ascii")
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "evil", "trainable": True, "dtype": "float32",
                       "function": {"class_name": "__lambda__",
                                    "config": {"code": code, "defaults": None,
                                               "closure": None}},
                       "arguments": {}}}


def keras_zip_with_lambda(path, sentinel):
    """A Keras 3 `.keras` archive, saved by Keras itself, of a model with a Lambda layer
    whose function creates `sentinel` when called (Keras calls it while rebuilding the
    model in `load_model(..., safe_mode=False)`). Imports Keras."""
    import keras
    fn = eval("lambda x: (" + sentinel_code(sentinel) + ", x)[1]")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(fn, name="evil")])
    model.save(path)
    if os.path.exists(sentinel):   # building the model called the function once
        os.remove(sentinel)
    return str(path)


def keras2_full_model_with_lambda(path, sentinel, layer="mrcnn_mask", shape=(1, 1, 256, 6)):
    """A Keras-2 full-model HDF5 file (`model_config` + `model_weights`) whose model_config
    holds a Lambda layer that creates `sentinel` if deserialised; its weights are numbers."""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(
            {"class_name": "Model", "config": {"layers": [_lambda_config(sentinel)]}}).encode()
        f.attrs["training_config"] = np.void(pickle_payload(sentinel))
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([layer.encode()])
        lg = g.create_group(layer)
        names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
        lg.attrs["weight_names"] = np.array([n.encode() for n in names])
        lg.create_dataset(names[0], data=np.zeros(shape, np.float32))
        lg.create_dataset(names[1], data=np.zeros(shape[-1:], np.float32))
    return str(path)


# ----------------------------------------------------------------------------- other weight files
def not_keras_h5(path):
    """A valid HDF5 file that holds no Keras weights."""
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(10))
    return str(path)


def string_weights_h5(path, layer="mrcnn_mask"):
    """Keras-2 layout, but the layer's weight is an array of strings."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        g = f.create_group(layer)
        name = f"{layer}/kernel:0"
        g.attrs["weight_names"] = np.array([name.encode()])
        g.create_dataset(name, data=np.array([b"not", b"numbers"]))
    return str(path)


def missing_dataset_h5(path, layer="mrcnn_mask"):
    """Keras-2 layout whose weight_names point to a dataset that is not there."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        g = f.create_group(layer)
        g.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode()])
    return str(path)


def truncate(src, dst, fraction=0.5):
    """Copy the first `fraction` of src's bytes to dst."""
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[:int(len(data) * fraction)])
    return str(dst)


def file_with(path, data):
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)
