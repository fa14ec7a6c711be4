"""The bad-input corpus: every case is built here from tiny generated files and must give its
documented outcome (README, "What happens when things go wrong"):

* a clear one-line error (`error: ...`) and exit code 2, or
* a warning naming the file, and the file skipped (the rest is used), or
* accepted (odd but valid input, converted),

never a traceback and never a changed user file (the input tree is hashed before and after).

Dataset, image and mask cases run what `check` and `train` run, in this process: `WBC.main`
for `check` and for refusals, and `print_data_summary` + `load_subset` (what `train` does
before building the model) for the files it keeps. Weight files go through
`resolve_weights`, the CLI's loader, on one small model. Flags go through `WBC.main`; a few
cases also run as real subprocesses (they do not import TensorFlow, so they are cheap).
"""
import contextlib
import hashlib
import io
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

import badfiles
import WBC
from conftest import ROOT, cli
from matterport_h5 import write_matterport_h5
from test_dataset import H, W, disc, make_pair, save, smear, tree_hash
from wbc.dataset import check_dataset, read_image
from wbc.errors import UserError


# ----------------------------------------------------------------------------- helpers
def assert_one_line_error(code, err, words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def base_dataset(root):
    """Two good training pairs and one validation pair."""
    make_pair(root, "train", "Neutrophil", "good1")
    make_pair(root, "train", "Lymphocyte", "good2")
    make_pair(root, "val", "Neutrophil", "val1")


BASE = {"Neutrophil/good1", "Lymphocyte/good2"}


def snapshot(path):
    """Hashes of a file or of every file under a folder (None if absent)."""
    path = str(path)
    if os.path.isdir(path):
        return tree_hash(path)
    if os.path.isfile(path):
        return hashlib.sha256(open(path, "rb").read()).hexdigest()
    return None


def run_dataset_case(root, tmp_path, check_code=0, kinds=(), train=None, refuse=None):
    """Check a dataset as `check` and `train` do; returns the check report's problems.

    check_code: exit code of `check`. kinds: problem kinds that must be reported.
    train: the image ids ("Class/stem") `train` keeps, or None when it must refuse with
    the words in `refuse` (one-line error, exit 2).
    """
    before = snapshot(root)
    code, out, err = cli("check", f"--dataset={root}")
    assert code == check_code, out + err
    assert "Traceback" not in err
    report = check_dataset(root)
    found = {p["kind"] for p in report["problems"]}
    assert set(kinds) <= found, (kinds, report["problems"])
    for p in report["problems"]:
        assert p["path"] in out and p["message"] in out      # check prints every problem
    if refuse is not None:
        code, out, err = cli("train", f"--dataset={root}", "--weights=none",
                             f"--logs={tmp_path / 'logs'}")
        assert_one_line_error(code, err, refuse)
        assert not (tmp_path / "logs").exists()
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            broken = WBC.print_data_summary(str(root))
        data = WBC.load_subset(str(root), "train", broken)
        kept = {info["id"] for info in data.image_info}
        assert kept == set(train), (kept, report["problems"])
        for i in data.image_ids:                             # what the training input reads
            image = data.load_image(i)
            masks, ids = data.load_mask(i)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert masks.dtype == bool and masks.shape[:2] == image.shape[:2]
            assert len(ids) == masks.shape[-1]
    assert snapshot(root) == before
    return report["problems"]


# ----------------------------------------------------------------------------- datasets
def _only_val(root):
    make_pair(root, "val", "Neutrophil", "v")


def _only_train(root):
    make_pair(root, "train", "Neutrophil", "good1")
    make_pair(root, "train", "Lymphocyte", "good2")


def _no_mask_folder(root):
    make_pair(root, "train", "Neutrophil", "a", mask=False)
    make_pair(root, "val", "Neutrophil", "v")


def _variants(root):
    make_pair(root, "TRAIN", "neutrophils", "a")
    os.rename(os.path.join(root, "TRAIN", "image"), os.path.join(root, "TRAIN", "Images"))
    make_pair(root, "val", "Neutrophil", "v")


def _lisc_names(root):
    for short in ("Baso", "eosi", "lymp", "mono", "neut"):
        make_pair(root, "train", short, "x")
    make_pair(root, "val", "neut", "v")


def _unknown_class(root):
    base_dataset(root)
    make_pair(root, "train", "Platelets", "p")


def _image_without_mask(root):
    base_dataset(root)
    make_pair(root, "train", "Neutrophil", "lonely", mask=False)


def _mask_without_image(root):
    base_dataset(root)
    save(os.path.join(root, "train", "mask", "Neutrophil", "orphan.png"),
         np.zeros((H, W), np.uint8))


def _duplicate_stem(root):
    base_dataset(root)
    make_pair(root, "train", "Neutrophil", "twin", img_ext=".png")
    save(os.path.join(root, "train", "image", "Neutrophil", "twin.bmp"), smear())


def _same_stem_two_classes(root):
    base_dataset(root)
    make_pair(root, "train", "Basophil", "7", mask=disc((H, W), (10, 10), 6))
    make_pair(root, "train", "Monocyte", "7", mask=disc((H, W), (28, 30), 8))


def _mask_suffix(root):
    base_dataset(root)
    make_pair(root, "train", "Neutrophil", "x", mask=False)
    save(os.path.join(root, "train", "mask", "Neutrophil", "x_mask.png"), disc((H, W), (20, 20), 9))


def _stray_file(root):
    base_dataset(root)
    save(os.path.join(root, "train", "image", "loose.png"), smear())


def _sub_folder(root):
    base_dataset(root)
    make_pair(root, "train", os.path.join("Neutrophil", "extra"), "deep")


def _empty_class(root):
    base_dataset(root)
    os.makedirs(os.path.join(root, "train", "image", "Eosinophil"))


def _junk_files(root):
    base_dataset(root)
    folder = os.path.join(root, "train", "image", "Neutrophil")
    for name in (".DS_Store", "Thumbs.db", "._good1.bmp", "desktop.ini"):
        badfiles.file_with(os.path.join(folder, name), b"junk")


def _gif_image(root):
    base_dataset(root)
    make_pair(root, "train", "Neutrophil", "anim", img_ext=".gif")


def _jpeg_mask(root):
    base_dataset(root)
    make_pair(root, "train", "Neutrophil", "lossy", mask_ext=".jpg")


def _all_masks_empty(root):
    make_pair(root, "train", "Neutrophil", "e", mask=np.zeros((H, W), np.uint8))
    make_pair(root, "val", "Neutrophil", "v")


def _val_masks_empty(root):
    make_pair(root, "train", "Neutrophil", "good1")
    make_pair(root, "val", "Neutrophil", "v", mask=np.zeros((H, W), np.uint8))


def _mixed_sizes(root):
    base_dataset(root)
    make_pair(root, "train", "Monocyte", "big", shape=(90, 70))
    make_pair(root, "train", "Monocyte", "small", shape=(33, 31))


def _root_is_file(root):
    os.makedirs(os.path.dirname(root), exist_ok=True)
    badfiles.file_with(root, b"not a folder")


def _points_at_train(root):
    make_pair(os.path.dirname(root), "train_only", "Neutrophil", "a")
    os.rename(os.path.join(os.path.dirname(root), "train_only"), root)   # root = a train/


DATASET_CASES = [
    # id, build, check exit code, problem kinds, train keeps (None: refuses), refusal words
    ("root-missing", lambda r: None, 2, {"missing_folder"}, None, ["dataset folder not found"]),
    ("root-is-a-file", _root_is_file, 2, {"missing_folder"}, None, ["is a file"]),
    ("dataset-is-train-folder", _points_at_train, 2, {"missing_folder"}, None,
     ["train folder not found"]),
    ("no-train-folder", _only_val, 2, {"missing_folder"}, None, ["train folder not found"]),
    ("no-val-folder", _only_train, 2, {"missing_folder"}, None, ["val folder not found"]),
    ("no-mask-folder", _no_mask_folder, 2, {"missing_folder"}, None, ["mask folder not found"]),
    ("case-and-plural-folders", _variants, 0, (), {"Neutrophil/a"}, None),
    ("lisc-short-class-names", _lisc_names, 0, (),
     {f"{c}/x" for c in ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil")}, None),
    ("unknown-class-folder", _unknown_class, 0, {"unknown_class"}, BASE, None),
    ("image-without-mask", _image_without_mask, 0, {"missing_mask"}, BASE, None),
    ("mask-without-image", _mask_without_image, 0, {"missing_image"}, BASE, None),
    ("two-images-one-stem", _duplicate_stem, 0, {"duplicate_stem"}, BASE, None),
    ("same-stem-in-two-classes", _same_stem_two_classes, 0, (),
     BASE | {"Basophil/7", "Monocyte/7"}, None),
    ("mask-named-x_mask", _mask_suffix, 0, {"missing_mask", "missing_image"}, BASE, None),
    ("file-outside-class-folders", _stray_file, 0, {"stray_file"}, BASE, None),
    ("sub-folder-in-class-folder", _sub_folder, 0, {"ignored_folder"}, BASE, None),
    ("empty-class-folder", _empty_class, 0, {"empty_class"}, BASE, None),
    ("hidden-and-junk-files", _junk_files, 0, (), BASE, None),
    ("gif-image", _gif_image, 0, {"unsupported_file"}, BASE, None),
    ("jpeg-mask", _jpeg_mask, 0, {"unsupported_file"}, BASE, None),
    ("no-train-mask-holds-a-cell", _all_masks_empty, 2, {"no_cell"}, None,
     ["no usable training images"]),
    ("no-val-mask-holds-a-cell", _val_masks_empty, 2, {"no_cell"}, None,
     ["no usable image/mask pair with a cell to validate on"]),
    ("images-of-mixed-sizes", _mixed_sizes, 0, (), BASE | {"Monocyte/big", "Monocyte/small"},
     None),
]


@pytest.mark.parametrize("case", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_dataset_cases(tmp_path, case):
    name, build, check_code, kinds, train, refuse = case
    root = str(tmp_path / "WBC")
    build(root)
    problems = run_dataset_case(root, tmp_path, check_code, kinds, train, refuse)
    if name == "hidden-and-junk-files":
        junk = {".DS_Store", "Thumbs.db", "._good1.bmp", "desktop.ini"}
        assert not [p for p in problems if os.path.basename(p["path"]) in junk], problems
    if name == "mask-named-x_mask":
        assert any("rename it to 'x'" in p["message"] for p in problems)
    if name == "jpeg-mask":
        assert any("lossless" in p["fix"] for p in problems)


# ----------------------------------------------------------------------------- images
def _img(writer):
    """A case builder: base dataset + Neutrophil/odd whose image file `writer` writes."""
    def build(root):
        base_dataset(root)
        folder = os.path.join(root, "train", "image", "Neutrophil")
        os.makedirs(folder, exist_ok=True)
        writer(folder)
        save(os.path.join(root, "train", "mask", "Neutrophil", "odd.png"),
             disc((H, W), (H // 2, W // 2), 12))
    return build


def _cut(ext, fraction):
    def write(folder):
        good = save(os.path.join(folder, ".source" + ext), smear(), **(
            {"quality": 90} if ext == ".jpg" else {}))
        data = open(good, "rb").read()
        os.remove(good)
        return badfiles.file_with(os.path.join(folder, "odd" + ext),
                                  data[:int(len(data) * fraction)])
    return write


def _renamed(fmt, ext):
    def write(folder):
        path = os.path.join(folder, "odd" + ext)
        Image.fromarray(smear()).save(path, format=fmt)
        return path
    return write


def _mode(mode, ext=".png", **kw):
    def write(folder):
        img = Image.fromarray(smear())
        if mode == "P+transparency":
            img = img.quantize(colors=8)
            kw["transparency"] = 0
        elif mode == "I;16":
            img = Image.fromarray((np.arange(H * W).reshape(H, W) * 20).astype(np.uint16))
        else:
            img = img.convert(mode)
        path = os.path.join(folder, "odd" + ext)
        img.save(path, **kw)
        return path
    return write


def _png16rgb(folder):
    a = (np.arange(H * W * 3).reshape(H, W, 3) * 97 % 65536).astype(np.uint16)
    return badfiles.png16_rgb(os.path.join(folder, "odd.png"), a)


def _frames(folder):
    return badfiles.multiframe_tiff(os.path.join(folder, "odd.tif"), [smear(seed=1), smear(seed=2)])


def _claiming(kind, size):
    def write(folder):
        fn = {"png": badfiles.png_claiming, "bmp": badfiles.bmp_claiming,
              "tif": badfiles.tiff_claiming, "jpg": badfiles.jpeg_claiming}[kind]
        return fn(os.path.join(folder, "odd." + kind), *size)
    return write


HUGE = [("png", (100000, 100000)), ("bmp", (100000, 100000)), ("tif", (100000, 100000)),
        ("jpg", (65000, 65000))]

IMAGE_CASES = [
    # id, writer, outcome: "skip" + words, or "ok"
    ("zero-byte", lambda d: badfiles.file_with(os.path.join(d, "odd.png"), b""), "skip", "empty"),
    ("truncated-png", _cut(".png", 0.5), "skip", "truncated"),
    ("truncated-bmp", _cut(".bmp", 0.6), "skip", "truncated"),
    ("header-only-jpeg", _cut(".jpg", 0.1), "skip", "truncated"),
    ("text-named-png", lambda d: badfiles.file_with(os.path.join(d, "odd.png"), b"hello\n" * 9),
     "skip", "not an image"),
    ("random-bytes-named-tif", lambda d: badfiles.file_with(
        os.path.join(d, "odd.tif"), np.random.default_rng(1).bytes(300)), "skip", "not an image"),
    ("png-named-bmp", _renamed("PNG", ".bmp"), "ok", None),
    ("jpeg-named-png", _renamed("JPEG", ".png"), "ok", None),
] + [(f"{kind}-header-claims-{w}x{h}", _claiming(kind, (w, h)), "skip", "absurdly large")
     for kind, (w, h) in HUGE] + [
    ("16-bit-grey", _mode("I;16"), "ok", None),
    ("16-bit-rgb", _png16rgb, "ok", None),
    ("palette", _mode("P"), "ok", None),
    ("palette-with-transparency", _mode("P+transparency"), "ok", None),
    ("rgba", _mode("RGBA"), "ok", None),
    ("grey-alpha", _mode("LA"), "ok", None),
    ("1-bit", _mode("1"), "ok", None),
    ("cmyk-jpeg", _mode("CMYK", ".jpg"), "ok", None),
    ("multi-frame-tiff", _frames, "ok", None),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_image_cases(tmp_path, case):
    name, writer, outcome, words = case
    root = str(tmp_path / "WBC")
    _img(writer)(root)
    if outcome == "ok":
        run_dataset_case(root, tmp_path, 0, (), BASE | {"Neutrophil/odd"})
        path = next(p for p in (tmp_path / "WBC" / "train" / "image" / "Neutrophil").iterdir()
                    if p.stem == "odd")
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    else:
        problems = run_dataset_case(root, tmp_path, 0, {"unreadable"}, BASE)
        (p,) = [p for p in problems if p["kind"] == "unreadable"]
        assert os.path.basename(p["path"]).startswith("odd"), p
        assert words.lower() in p["message"].lower(), p


def test_huge_headers_are_refused_without_allocating(tmp_path):
    """Files claiming 10 gigapixels are refused from the header, in a process that could not
    allocate even 2 GB."""
    paths = [_claiming(kind, size)(str(tmp_path)) for kind, size in HUGE]
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from wbc.dataset import image_size, read_image, read_mask\n"
        "from wbc.errors import UserError\n"
        "for path in sys.argv[1:]:\n"
        "    for reader in (read_image, read_mask, image_size):\n"
        "        try:\n"
        "            reader(path)\n"
        "            print('DECODED', path)\n"
        "        except UserError as exc:\n"
        "            print(exc)\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script] + paths, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 * len(paths) and all("absurdly large" in line for line in lines), lines


# ----------------------------------------------------------------------------- masks
def _with_mask(mask=None, writer=None, image_shape=(H, W)):
    def build(root):
        base_dataset(root)
        save(os.path.join(root, "train", "image", "Neutrophil", "odd.bmp"), smear(image_shape))
        path = os.path.join(root, "train", "mask", "Neutrophil", "odd.png")
        if writer:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            writer(path)
        else:
            save(path, mask)
    return build


def _stray(cell=False):
    m = disc((H, W), (20, 24), 9) if cell else np.zeros((H, W), np.uint8)
    m[1, 1] = 30
    m[38:40, 0:3] = 200
    m[0, 40:47] = 7
    return m


def _two_cells():
    m = disc((H, W), (10, 10), 6)
    disc((H, W), (28, 34), 7, out=m)
    return m


def _colour():
    m = np.zeros((H, W, 3), np.uint8)
    m[..., 1] = disc((H, W), (20, 24), 10)
    return m


def _rgba():
    m = np.full((H, W, 4), 255, np.uint8)
    m[..., 3] = (disc((H, W), (20, 24), 10) > 0) * 255
    return m


def _labels16():
    m = np.zeros((H, W), np.uint16)
    m[2:12, 2:12], m[20:35, 20:40] = 1, 40000
    return m


def _cut_mask(fraction):
    def write(path):
        save(path, disc((H, W), (20, 24), 10))
        data = open(path, "rb").read()
        open(path, "wb").write(data[:int(len(data) * fraction)])
    return write


MASK_CASES = [
    # id, builder, problem kind reported (or None), cells found (None: the pair is skipped)
    ("empty", _with_mask(np.zeros((H, W), np.uint8)), "no_cell", 0),
    ("all-foreground", _with_mask(np.full((H, W), 255, np.uint8)), "mask_covers_image", 1),
    ("smaller-than-image", _with_mask(np.zeros((H - 3, W), np.uint8)), "size_mismatch", None),
    ("larger-than-image", _with_mask(disc((H + 10, W + 10), (20, 20), 8)), "size_mismatch", None),
    ("stray-pixels-only", _with_mask(_stray()), "no_cell", 0),
    ("cell-and-stray-pixels", _with_mask(_stray(cell=True)), None, 1),
    ("lisc-8px-smaller", _with_mask(disc((H - 8, W - 8), (16, 20), 8)), "lisc_padding", 1),
    ("two-cells", _with_mask(_two_cells()), None, 2),
    ("nucleus-and-cytoplasm-levels", _with_mask(disc((H, W), (20, 24), 12, value=90)), None, 1),
    ("colour-mask", _with_mask(_colour()), None, 1),
    ("rgba-mask-transparent-background", _with_mask(_rgba()), None, 1),
    ("16-bit-label-mask", _with_mask(_labels16()), None, 2),
    ("1-bit-mask", _with_mask(disc((H, W), (20, 24), 10) > 0), None, 1),
    ("truncated-mask", _with_mask(writer=_cut_mask(0.4)), "unreadable", None),
    ("zero-byte-mask", _with_mask(writer=lambda p: badfiles.file_with(p, b"")), "unreadable",
     None),
]


@pytest.mark.parametrize("case", MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_cases(tmp_path, case):
    name, build, kind, cells = case
    root = str(tmp_path / "WBC")
    build(root)
    kinds = {kind} if kind else set()
    keeps = BASE if cells is None else BASE | {"Neutrophil/odd"}
    problems = run_dataset_case(root, tmp_path, 0, kinds, keeps)
    if kind is None:
        assert not [p for p in problems if "odd" in p["path"]], problems
    if cells is not None:
        data = WBC.load_subset(root, "train")
        (i,) = [i for i in data.image_ids if data.image_info[i]["id"] == "Neutrophil/odd"]
        masks, ids = data.load_mask(i)
        assert masks.shape == (H, W, cells) and list(ids) == [data.class_names.index(
            "Neutrophil")] * cells


# ----------------------------------------------------------------------------- weight files
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A training-mode model with the small backbone at 128 px, as `train` builds it."""
    WBC.quiet_tensorflow()
    from mrcnn import model as modellib
    config = WBC.make_config(BACKBONE="small", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128)
    logs = tmp_path_factory.mktemp("logs")
    model = modellib.MaskRCNN("training", config, str(logs))
    good = str(logs / "good.h5")
    model.save_weights(good)
    return model, good


def weights_digest(model):
    h = hashlib.sha256()
    for v in model.keras_model.weights:
        h.update(np.asarray(v.numpy()).tobytes())
    return h.hexdigest()


def _keras_zip(path):
    """A Keras 3 model with a Lambda layer saved by Keras (.keras: zip, .h5: legacy HDF5)."""
    return badfiles.keras_zip_with_lambda(path, os.path.join(os.path.dirname(path), "sentinel"))


WEIGHT_CASES = [
    # id, writer(path, good checkpoint) -> --weights value, words of the one-line error
    ("missing-file", lambda p, g: p, ["file not found"]),
    ("a-folder", lambda p, g: (os.makedirs(p), p)[1], ["file not found"]),
    ("zero-byte", lambda p, g: badfiles.file_with(p, b""), ["not a readable HDF5", "0 bytes"]),
    ("hdf5-signature-then-zeros", lambda p, g: badfiles.file_with(
        p, b"\x89HDF\r\n\x1a\n" + b"\0" * 100), ["not a readable HDF5"]),
    ("text-file", lambda p, g: badfiles.file_with(p, b"weights: yes\n"), ["not a readable HDF5"]),
    ("checkpoint-cut-in-half", lambda p, g: badfiles.truncate(g, p), ["weights file"]),
    ("hdf5-without-keras-weights", lambda p, g: badfiles.not_keras_h5(p),
     ["without Keras weights"]),
    ("other-class-count", lambda p, g: (write_matterport_h5(
        p, backbone="resnet50", num_classes=81, only=["mrcnn_class_logits"]), p)[1],
     ["mrcnn_class_logits", "(1024, 81)", "exclude="]),
    ("other-backbone", lambda p, g: (write_matterport_h5(
        p, backbone="resnet50", num_classes=6, only=["fpn_c5p5"]), p)[1],
     ["fpn_c5p5", "backbone", "exclude="]),
    ("strings-instead-of-numbers", lambda p, g: badfiles.string_weights_h5(p), ["not numeric"]),
    ("weight-dataset-missing", lambda p, g: badfiles.missing_dataset_h5(p), ["damaged"]),
    ("keras3-zip", lambda p, g: _keras_zip(p[:-3] + ".keras"), ["not a readable HDF5"]),
    ("keras3-legacy-h5-of-another-model", lambda p, g: _keras_zip(p),
     ["none of this model's layers"]),
]


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_weight_file_cases(tmp_path, small_model, case):
    name, write, words = case
    model, good = small_model
    path = write(str(tmp_path / "weights.h5"), good)
    before, state = snapshot(tmp_path), weights_digest(model)
    with pytest.raises(UserError) as info:
        WBC.resolve_weights(model, path, str(tmp_path / "logs"), for_training=True)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert weights_digest(model) == state                   # nothing half-loaded
    assert snapshot(tmp_path) == before
    assert not os.path.exists(tmp_path / "sentinel")


def test_weights_last_and_coco_misuse_are_one_line(tmp_path, small_model):
    model, _ = small_model
    with pytest.raises(UserError, match="no checkpoint of a WBC run"):
        WBC.resolve_weights(model, "last", str(tmp_path / "empty"), for_training=True)
    with pytest.raises(UserError, match="COCO weights know no white cells"):
        WBC.resolve_weights(model, "coco", str(tmp_path), for_training=False)


# ----------------------------------------------------------------------------- weights are data
def test_loading_weight_files_never_runs_code_from_them(tmp_path, small_model):
    """Pickled objects in attributes and weights, a Keras-2 model_config with a Lambda, a
    Keras 3 `.keras` zip with a Lambda: each is read as data or refused in one line, and the
    payload (which creates a sentinel file when deserialised) never runs."""
    import keras
    from mrcnn.weights import read_weight_file
    model, _ = small_model
    sentinel = tmp_path / "sentinel"
    # the payloads are live: deserialising them the unsafe way does create the sentinel
    pickle.loads(badfiles.pickle_payload(sentinel))
    assert sentinel.exists()
    sentinel.unlink()
    archive = badfiles.keras_zip_with_lambda(str(tmp_path / "model.keras"), str(sentinel))
    keras.saving.load_model(archive, safe_mode=False)
    assert sentinel.exists()
    sentinel.unlink()
    assert zipfile.is_zipfile(archive)

    pickled = badfiles.h5_with_pickles(str(tmp_path / "pickled.h5"), sentinel)
    for path, words in ((pickled, "not numeric"), (archive, "not a readable HDF5")):
        with pytest.raises(UserError) as info:
            WBC.resolve_weights(model, path, str(tmp_path), for_training=True)
        assert words in str(info.value) and "\n" not in str(info.value)
        assert not sentinel.exists()
    # a full-model file: its weights are numbers and load; its model_config is never read
    full = badfiles.keras2_full_model_with_lambda(str(tmp_path / "full.h5"), sentinel)
    layers = read_weight_file(full)
    assert list(layers) == ["mrcnn_mask"]
    model.load_weights(full, by_name=True)
    mask_kernel = model.keras_model.get_layer("mrcnn_mask").weights[0].numpy()
    assert not mask_kernel.any()
    assert not sentinel.exists()


# ----------------------------------------------------------------------------- flags
@pytest.fixture(scope="module")
def flag_inputs(tmp_path_factory):
    top = tmp_path_factory.mktemp("flags")
    data = str(top / "WBC")
    base_dataset(data)
    os.makedirs(top / "empty")
    badfiles.file_with(str(top / "a-file"), b"user data\n")
    return top, data


def flag_cases(top, data):
    image = os.path.join(data, "train", "image", "Neutrophil", "good1.bmp")
    train = ["train", f"--dataset={data}", f"--logs={top / 'logs'}"]
    return [
        # id, argv, words of the one-line error
        ("unknown-command", ["frobnicate"], ["invalid choice: 'frobnicate'"]),
        ("unknown-flag", train + ["--frobnicate=1"], ["unrecognized arguments",
                                                       "WBC.py train --help"]),
        ("missing-required", ["train"], ["--dataset"]),
        ("option-before-command", [f"--dataset={data}", "train", "--epochs=1"],
         [f"--dataset={data} goes after the command name",
          f"WBC.py train --dataset={data} --epochs=1"]),
        ("option-value-before-command", ["--subset", "train", "evaluate", f"--dataset={data}"],
         ["--subset goes after", f"WBC.py evaluate --subset train --dataset={data}"]),
        ("misspelt-command", ["evalute", f"--dataset={data}", "--subset", "train"],
         ["invalid choice: 'evalute'"]),
        ("flag-without-value", ["check", "--dataset"], ["expected one argument"]),
        ("epochs-not-a-number", train + ["--epochs=ten"], ["--epochs", "not a whole number"]),
        ("epochs-zero", train + ["--epochs=0"], ["--epochs", "at least 1"]),
        ("steps-negative", train + ["--steps-per-epoch=-1"], ["--steps-per-epoch"]),
        ("lr-zero", train + ["--lr=0"], ["--lr", "more than 0"]),
        ("mask-rois-zero", train + ["--mask-rois=0"], ["--mask-rois", "at least 1"]),
        ("lr-nan", train + ["--lr=nan"], ["--lr", "finite"]),
        ("image-size-100", train + ["--image-size=100"], ["multiple of 64"]),
        ("time-limit-words", train + ["--time-limit=soon"], ["not a duration"]),
        ("time-limit-zero", train + ["--time-limit=0"], ["more than 0"]),
        ("time-budget-words", train + ["--time-budget=soon"], ["--time-budget", "not a duration"]),
        ("time-budget-zero", train + ["--time-budget=0m"], ["--time-budget", "more than 0"]),
        ("time-budget-and-limit", train + ["--time-budget=2h", "--time-limit=3h"],
         ["give one"]),
        ("backbone-unknown", train + ["--backbone=vgg"], ["invalid choice: 'vgg'"]),
        ("mix-in-no-class", train + ["--mix-in=WBC-cells"], ["--mix-in", "is not DIR:CLASS=N"]),
        ("mix-in-unknown-class", train + ["--mix-in=WBC-cells:Platelet=3"],
         ["--mix-in", "'Platelet'", "is not a class"]),
        ("mix-in-zero", train + ["--mix-in=WBC-cells:Basophil=0"], ["--mix-in", "at least 1"]),
        ("mix-in-class-twice", train + ["--mix-in=WBC-cells:Basophil=2,baso=1"],
         ["Basophil given twice"]),
        ("mix-in-folder-twice", train + [f"--mix-in={top}:Basophil=1", f"--mix-in={top}/:Eosi=1"],
         ["is given twice", "CLASS=N,CLASS=N"]),
        ("mix-in-missing-folder", train + [f"--mix-in={top / 'nope'}:Basophil=2"],
         ["nope", "dataset folder not found"]),
        ("augment-unknown", train + ["--augment=heavy"], ["invalid choice: 'heavy'"]),
        ("layers-bad-regex", train + ["--layers=(res"], ["not a valid regular expression"]),
        ("layers-match-nothing", train + ["--layers=res5.*", "--backbone=small",
                                          "--image-size=128"], ["matches no layer"]),
        ("seed-negative", train + ["--seed=-3"], ["--seed"]),
        ("min-confidence-1.5", ["detect", f"--image={image}", "--min-confidence=1.5"],
         ["at most 1"]),
        ("threads-zero", ["detect", f"--image={image}", "--threads=0"], ["at least 1"]),
        ("detect-with-imagenet", ["detect", f"--image={image}", "--weights=imagenet",
                                  f"--out={top / 'out'}"], ["ImageNet", "no detector"]),
        ("image-and-images", ["detect", f"--image={image}", f"--images={top}"],
         ["exactly one"]),
        ("neither-image-nor-images", ["detect"], ["exactly one"]),
        ("images-folder-empty", ["detect", f"--images={top / 'empty'}"], ["no image files"]),
        ("images-folder-missing", ["detect", f"--images={top / 'nope'}"], ["folder not found"]),
        ("out-is-a-file", ["detect", f"--image={image}", f"--out={top / 'a-file'}"],
         ["is a file"]),
        ("results-and-weights", ["evaluate", f"--dataset={data}", "--results=r.json",
                                 "--weights=w.h5"], ["only one"]),
        ("results-missing", ["evaluate", f"--dataset={data}", f"--results={top / 'r.json'}"],
         ["file not found"]),
        ("synth-zero-images", ["synth", f"--out={top / 's'}", "--images=0"],
         ["--images", "at least 1"]),
        ("synth-tiny-size", ["synth", f"--out={top / 's'}", "--size=8"], ["size"]),
        ("synth-out-under-a-file", ["synth", f"--out={top / 'a-file' / 's'}"],
         ["a-file", "Not a directory"]),
        ("val-fraction-1.5", ["import-lisc", f"--source={top}", f"--out={top / 'o'}",
                              "--val-fraction=1.5"], ["--val-fraction", "at most 1"]),
    ]


FLAG_IDS = [c[0] for c in flag_cases(pathlib.Path("T"), "D")]


@pytest.mark.parametrize("name", FLAG_IDS)
def test_flag_cases(flag_inputs, name):
    top, data = flag_inputs
    argv, words = next((a, w) for n, a, w in flag_cases(top, data) if n == name)
    before = snapshot(top)
    code, out, err = cli(*argv)
    assert_one_line_error(code, err, words)
    assert snapshot(top) == before


def test_real_processes_print_one_line(flag_inputs):
    """The same outcomes from real `python3 WBC.py` processes (no TensorFlow needed)."""
    top, data = flag_inputs
    cases = [(["frobnicate"], "invalid choice"), (["train", "--epochs=x"], "not a whole number"),
             (["check", f"--dataset={top / 'a-file'}"], None)]
    for argv, words in cases:
        result = subprocess.run([sys.executable, os.path.join(ROOT, "WBC.py")] + argv,
                                capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        if words:
            assert_one_line_error(result.returncode, result.stderr, [words])
        else:
            assert "is a file" in result.stdout
