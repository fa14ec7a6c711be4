"""The user's dataset: folder layout, image and mask decoding and checks.

Layout (the user's contract, see design.md)::

    <root>/<train|val>/image/<Class>/<stem>.<png|bmp|jpg|jpeg|tif|tiff>
    <root>/<train|val>/mask/<Class>/<stem>.<png|bmp|tif|tiff>

* An image and its mask pair by file stem inside the same class. Class folders match
  case-insensitively, in the plural, or by LISC's short names (see :func:`match_class`).
* Every 8-connected component of the mask's non-zero pixels is one cell of the folder's
  class (LISC draws nucleus and cytoplasm in two grey levels: both are the cell).
* Components smaller than the minimum area are stray pixels, not cells:
  ``min_area = max(30, ceil(0.001 * H * W))`` pixels of the image (see
  :func:`default_min_area`). That is 30 px for a 120x120 image, 90 px for 300x300 and
  415 px for LISC's 720x576; real cells there cover thousands of pixels.
* A mask exactly 8 px smaller than its image in both dimensions (LISC: 712x568 masks for
  720x576 images) is zero-padded by 4 px on every side; any other size mismatch is an error.

Public API: :data:`CLASS_NAMES`, :func:`match_class`, :func:`read_image`,
:func:`read_mask`, :func:`image_size`, :func:`default_min_area`,
:func:`fit_mask_to_image`, :func:`mask_to_instances`, :func:`scan_dataset`,
:func:`mix_in_entries`, :class:`WBCDataset`, :func:`check_dataset`,
:func:`format_check_report`. Importing the LISC archive into this layout is :mod:`wbc.lisc`.

Problems found while scanning or checking are dicts ``{"severity": "error"|"warning",
"kind": str, "path": str, "message": str, "fix": str}`` (plus ``"subset"`` in
:func:`check_dataset`). Errors: a file the user meant as training data is broken,
mismatched or ambiguous and is skipped. Warnings: something looks odd (an ignored file, an
empty folder, a mask with no cell, a class missing from val) and deserves a look.
"""
import logging
import math
import os
import re
import shlex
import warnings

import numpy as np
import scipy.ndimage
from PIL import Image, UnidentifiedImageError

from mrcnn import utils
from wbc.errors import UserError

logger = logging.getLogger(__name__)

CLASS_NAMES = ["Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
SOURCE = "WBC"
SUBSETS = ("train", "val")
IMAGE_EXTS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_EXTS = (".png", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 100_000_000          # larger images are refused before decoding
LISC_MARGIN = 8                   # LISC masks are this many px smaller than their images
MIN_AREA_PIXELS = 30              # minimum cell area, absolute floor ...
MIN_AREA_FRACTION = 0.001         # ... and as a fraction of the image area
_JUNK_FILES = {"thumbs.db", "desktop.ini"}
_CLASS_LIST = ", ".join(CLASS_NAMES)


def _fail(path, problem, fix, kind="unreadable"):
    """A UserError "<path>: <problem>. <fix>" that also carries the parts (and a kind
    for check reports) as attributes."""
    err = UserError("{}: {}. {}".format(path, problem, fix))
    err.path, err.problem, err.fix, err.kind = str(path), problem, fix, kind
    return err


def _problem(severity, kind, path, message, fix):
    return {"severity": severity, "kind": kind, "path": str(path), "message": message, "fix": fix}


def _natural_key(text):
    """Sort key putting "2" before "10"."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _is_hidden_or_junk(name):
    return name.startswith(".") or name.lower() in _JUNK_FILES


############################################################
#  Class names
############################################################

def match_class(folder_name):
    """The class name (one of CLASS_NAMES) a folder name stands for, or None.

    Case-insensitive; accepts the full name ("neutrophil"), the plural ("Neutrophils") and
    any prefix of at least 4 letters, which covers LISC's short names (Baso, eosi, lymp,
    mono, neut). LISC's "mixt" folder and anything else unknown give None.
    """
    name = str(folder_name).strip().lower()
    for cls in CLASS_NAMES:
        full = cls.lower()
        if name in (full, full + "s") or (len(name) >= 4 and full.startswith(name)):
            return cls
    return None


############################################################
#  Decoding
############################################################

def _open(path, kind):
    """Open an image file lazily (header only) after the checks every reader needs.

    Returns an open PIL image (the caller closes it). Raises UserError naming the file for
    a missing, unreadable, empty or non-image file and for more than MAX_PIXELS pixels.
    """
    path = os.fspath(path)
    try:
        if os.path.isdir(path):
            raise _fail(path, "is a folder, not a {} file".format(kind),
                        "Point to an image file")
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise _fail(path, "{} file not found".format(kind), "Check the path") from None
    except OSError as exc:
        raise _fail(path, "cannot read the {} file ({})".format(kind, exc.strerror or exc),
                    "Check that the file exists and is readable") from None
    if size == 0:
        raise _fail(path, "{} file is empty (0 bytes)".format(kind),
                    "Copy or export the file again")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bomb warnings (checked below), corrupt EXIF, ...
        try:
            img = Image.open(path)
        except Image.DecompressionBombError:
            raise _fail(path, "image is absurdly large (over {} megapixels)".format(
                MAX_PIXELS // 1_000_000), "Crop or downscale it first") from None
        except UnidentifiedImageError:
            raise _fail(path, "not an image file (or an unsupported format)",
                        "Save it as PNG, BMP, JPEG or TIFF") from None
        except Exception as exc:  # PIL raises many types for broken headers
            raise _fail(path, "cannot read the {} ({})".format(kind, exc),
                        "Replace the file with a good copy") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise _fail(path, "image is absurdly large ({}x{} = {:.0f} megapixels, limit {})".format(
            width, height, width * height / 1e6, MAX_PIXELS // 1_000_000),
            "Crop or downscale it first")
    if width == 0 or height == 0:
        img.close()
        raise _fail(path, "image has no pixels ({}x{})".format(width, height),
                    "Replace the file with a good copy")
    return img


def _load(img, path, kind):
    """Decode pixels; UserError for truncated or corrupt data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Exception as exc:  # truncated data -> OSError; corrupt -> various
        raise _fail(path, "{} file is truncated or corrupt ({})".format(kind, exc),
                    "Copy or export the file again") from None


def _scale_to_uint8(array, keep_nonzero=False):
    """uint16 / int32 / float pixels -> uint8. Integer data up to 65535 is scaled by the
    16-bit range (65535 -> 255), wider data by its maximum; floats in [0, 1] by 255.
    With keep_nonzero (masks) rounding is upwards so no non-zero pixel becomes zero."""
    a = np.nan_to_num(np.asarray(array, dtype=np.float64))
    a = np.clip(a, 0, None)
    top = float(a.max()) if a.size else 0.0
    if np.issubdtype(np.asarray(array).dtype, np.floating):
        full = 1.0 if top <= 1.0 else (255.0 if top <= 255.0 else top)
    else:
        full = 65535.0 if top <= 65535 else top
    a = a * (255.0 / full)
    a = np.ceil(a) if keep_nonzero else np.round(a)
    return np.clip(a, 0, 255).astype(np.uint8)


_WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def read_image(path):
    """Decode an image file to uint8 [H, W, 3] RGB.

    PNG, BMP, JPEG and TIFF (first frame). Grey, 1-bit and palette images become RGB; an
    alpha channel (RGBA, LA, transparent palette) is dropped; 16-bit grey is scaled by the
    16-bit range (65535 -> 255), and Pillow reads 16-bit colour as 8-bit. EXIF orientation
    is not applied (masks share the stored pixel grid). Raises UserError
    naming the file when it is missing, empty, truncated, not an image or over MAX_PIXELS.
    """
    path = os.fspath(path)
    img = _open(path, "image")
    with img:
        _load(img, path, "image")
        if img.mode in _WIDE_MODES:
            grey = _scale_to_uint8(np.asarray(img))
            return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))
        try:
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning
            rgb = img.convert("RGB")
        except Exception as exc:
            raise _fail(path, "cannot convert the image (mode {}) to RGB ({})".format(
                img.mode, exc), "Save it as an 8-bit RGB or grey PNG") from None
        return np.array(rgb, dtype=np.uint8).reshape(rgb.size[1], rgb.size[0], 3)


def read_mask(path):
    """Decode a mask file to uint8 [H, W]: 0 = background, non-zero = cell.

    Colour masks become grey by the maximum over the colour channels; pixels with an alpha
    of 0 (when the alpha channel is not all 0) are background; 16-bit masks are scaled by
    the 16-bit range, rounding up so that no labelled pixel becomes 0. Raises UserError
    like :func:`read_image`.
    """
    path = os.fspath(path)
    img = _open(path, "mask")
    with img:
        _load(img, path, "mask")
        if img.mode in _WIDE_MODES:
            return np.ascontiguousarray(_scale_to_uint8(np.asarray(img), keep_nonzero=True))
        if img.mode == "1" or img.mode == "L":
            return np.array(img.convert("L"), dtype=np.uint8)
        try:
            alpha = None
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                    img.mode == "P" and "transparency" in img.info):
                alpha = np.array(img.convert("RGBA"), dtype=np.uint8)[..., 3]
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:
            raise _fail(path, "cannot convert the mask (mode {}) to grey ({})".format(
                img.mode, exc), "Save it as an 8-bit grey PNG") from None
    grey = rgb.max(axis=-1)
    if alpha is not None and alpha.any():
        grey[alpha == 0] = 0
    return np.ascontiguousarray(grey)


def image_size(path):
    """(height, width) of an image file from its header only (no decoding).
    Same UserError checks as :func:`read_image` except truncation."""
    img = _open(path, "image")
    with img:
        return img.size[1], img.size[0]


############################################################
#  Masks -> instances
############################################################

def default_min_area(image_shape):
    """Minimum cell area in pixels: max(30, ceil(0.1% of the image area))."""
    h, w = int(image_shape[0]), int(image_shape[1])
    return max(MIN_AREA_PIXELS, int(math.ceil(MIN_AREA_FRACTION * h * w)))


def fit_mask_to_image(mask, image_shape, path="mask"):
    """Bring a [H, W] (or [H, W, C]) mask to the image's size.

    Returns (mask uint8/bool [H, W], padded: bool). Equal sizes pass through; a mask
    exactly LISC_MARGIN px smaller in both dimensions is zero-padded, centred; anything
    else raises UserError naming the mask, both sizes and the fix.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=-1)
    if mask.ndim != 2:
        raise _fail(path, "mask has shape {}, expected a 2-D image".format(mask.shape),
                    "Save the mask as a grey PNG")
    h, w = int(image_shape[0]), int(image_shape[1])
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask, False
    if (mh, mw) == (h - LISC_MARGIN, w - LISC_MARGIN) and mh > 0 and mw > 0:
        m = LISC_MARGIN // 2
        padded = np.zeros((h, w), dtype=mask.dtype)
        padded[m:m + mh, m:m + mw] = mask
        return padded, True
    raise _fail(path, "mask is {}x{} (WxH) but its image is {}x{}".format(mw, mh, w, h),
                "Make the mask the same size as its image (LISC masks {} px smaller are "
                "padded automatically)".format(LISC_MARGIN), kind="size_mismatch")


def _components(mask, min_area):
    """bool [H, W, N]: 8-connected components of mask > 0 with at least min_area px."""
    labels, n = scipy.ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(labels.shape + (0,), dtype=bool)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(areas >= min_area)
    keep = keep[keep > 0]
    return labels[:, :, None] == keep[None, None, :]


def mask_to_instances(mask, image_shape, min_area=None, path="mask"):
    """One boolean instance per cell of a mask.

    mask: [H', W'] (or [H', W', C], reduced by max) array; non-zero = cell.
    image_shape: (H, W[, C]) of the image the mask belongs to (see fit_mask_to_image).
    min_area: components with fewer pixels are dropped as stray pixels; None =
        :func:`default_min_area` (max(30, ceil(0.001 * H * W))).
    path: named in the UserError raised for a size mismatch.
    Returns bool [H, W, N], one channel per 8-connected component, in raster order of
    each component's first pixel; N may be 0.
    """
    mask, _ = fit_mask_to_image(mask, image_shape, path)
    if min_area is None:
        min_area = default_min_area(image_shape)
    return _components(mask, max(1, int(min_area)))


############################################################
#  Folder scan
############################################################

def _find_dir(parent, name):
    """<parent>/<name>, else the single case-insensitive or plural variant, else None."""
    exact = os.path.join(parent, name)
    if os.path.isdir(exact):
        return exact
    try:
        names = os.listdir(parent)
    except OSError:
        return None
    hits = [n for n in names if n.lower() in (name, name + "s")
            and os.path.isdir(os.path.join(parent, n))]
    return os.path.join(parent, hits[0]) if len(hits) == 1 else None


def _listdir(folder, problems):
    """Sorted names in folder; [] plus an error problem when it cannot be listed."""
    try:
        return sorted(os.listdir(folder), key=_natural_key)
    except OSError as exc:
        problems.append(_problem("error", "unreadable", folder, "cannot list the folder ({})"
                                 .format(exc.strerror or exc), "Check its permissions"))
        return []


def _collect(top, exts, kind, problems):
    """{class: {stem: [paths]}} of the files under <top>/<Class>/, reporting oddities."""
    found = {}
    for name in _listdir(top, problems):
        if _is_hidden_or_junk(name):
            continue
        path = os.path.join(top, name)
        if not os.path.isdir(path):
            problems.append(_problem(
                "warning", "stray_file", path, "file outside a class folder, ignored",
                "Move it into {}/<Class>/ ({})".format(top, _CLASS_LIST)))
            continue
        cls = match_class(name)
        if cls is None:
            problems.append(_problem(
                "error", "unknown_class", path,
                "unknown class folder {!r}; its files are skipped".format(name),
                "Rename it to one of {} (LISC short names like Baso also work), or move it "
                "out of the dataset".format(_CLASS_LIST)))
            continue
        count = 0
        for fname in _listdir(path, problems):
            if _is_hidden_or_junk(fname):
                continue
            fpath = os.path.join(path, fname)
            if os.path.isdir(fpath):
                problems.append(_problem("warning", "ignored_folder", fpath,
                                         "sub-folder inside a class folder, ignored",
                                         "Move its files up into {}".format(path)))
                continue
            stem, ext = os.path.splitext(fname)
            if ext.lower() not in exts:
                if kind == "mask" and ext.lower() in (".jpg", ".jpeg"):
                    fix = "Masks must be lossless: save it as PNG"
                else:
                    fix = "Convert it to {} or move it out of the dataset".format(
                        "/".join(e.lstrip(".").upper() for e in exts))
                problems.append(_problem("warning", "unsupported_file", fpath,
                                         "unsupported {} file type {!r}, ignored".format(
                                             kind, ext or "(none)"), fix))
                continue
            found.setdefault(cls, {}).setdefault(stem, []).append(fpath)
            count += 1
        if count == 0:
            problems.append(_problem("warning", "empty_class", path,
                                     "class folder holds no {} files".format(kind),
                                     "Add {}s or remove the folder".format(kind)))
    return found


def _mask_hint(stem, masks):
    """A hint when a mask with a near-miss name exists (case, _mask / _expert suffix)."""
    for other in masks:
        base = re.sub(r"[ _-]?(mask|expert\d*|gt|label)$", "", other, flags=re.I)
        if other != stem and (other.lower() == stem.lower() or base == stem):
            return " (a mask named {!r} exists: rename it to {!r})".format(other, stem)
    return ""


def scan_dataset(root, subset):
    """List the image/mask pairs of <root>/<subset> without decoding anything.

    Returns (entries, problems). entries: list of dicts {"image", "mask", "class_name",
    "class_id" (1..5, CLASS_NAMES order), "stem", "subset"}, sorted by class then stem.
    problems: list of problem dicts (module docstring) for missing folders, unknown or
    empty class folders, images without a mask (skipped), masks without an image,
    duplicate stems (all files of that stem skipped), unsupported or stray files.
    """
    root = os.fspath(root)
    problems = []
    if os.path.exists(root) and not os.path.isdir(root):
        problems.append(_problem(
            "error", "missing_folder", root, "is a file, not a dataset folder",
            "Pass the folder that holds train/ and val/ as --dataset"))
        return [], problems
    if not os.path.isdir(root):
        problems.append(_problem(
            "error", "missing_folder", root, "dataset folder not found",
            "Pass the right --dataset, or create {0}/train and {0}/val with image/<Class>/ "
            "and mask/<Class>/ inside".format(root)))
        return [], problems
    sub = _find_dir(root, subset)
    if sub is None:
        problems.append(_problem(
            "error", "missing_folder", os.path.join(root, subset),
            "{} folder not found".format(subset),
            "Create it with image/<Class>/ and mask/<Class>/ inside"))
        return [], problems
    dirs = {}
    for kind in ("image", "mask"):
        dirs[kind] = _find_dir(sub, kind)
        if dirs[kind] is None:
            problems.append(_problem(
                "error", "missing_folder", os.path.join(sub, kind),
                "{} folder not found".format(kind),
                "Create it with one folder per class ({})".format(_CLASS_LIST)))
    if None in dirs.values():
        return [], problems

    images = _collect(dirs["image"], IMAGE_EXTS, "image", problems)
    masks = _collect(dirs["mask"], MASK_EXTS, "mask", problems)
    entries = []
    for class_id, cls in enumerate(CLASS_NAMES, start=1):
        cls_images, cls_masks = images.get(cls, {}), masks.get(cls, {})
        for stem in sorted(cls_masks, key=_natural_key):
            paths = cls_masks[stem]
            if len(paths) > 1:
                problems.append(_problem(
                    "error", "duplicate_stem", paths[0],
                    "{} masks share the stem {!r} ({}); that image is skipped".format(
                        len(paths), stem, ", ".join(os.path.basename(p) for p in paths)),
                    "Keep one mask per image"))
            elif stem not in cls_images:
                problems.append(_problem(
                    "warning", "missing_image", paths[0],
                    "mask without an image of the same stem in class {}".format(cls),
                    "Add the image as {}/{}/{}.<png|bmp|jpg|tif> or remove the mask".format(
                        dirs["image"], cls, stem)))
        for stem in sorted(cls_images, key=_natural_key):
            paths = cls_images[stem]
            if len(paths) > 1:
                problems.append(_problem(
                    "error", "duplicate_stem", paths[0],
                    "{} images share the stem {!r} ({}); they are skipped".format(
                        len(paths), stem, ", ".join(os.path.basename(p) for p in paths)),
                    "Rename or remove all but one"))
                continue
            mask_paths = cls_masks.get(stem)
            if not mask_paths:
                problems.append(_problem(
                    "error", "missing_mask", paths[0],
                    "image without a mask in class {}; skipped".format(cls)
                    + _mask_hint(stem, cls_masks),
                    "Add its mask as {}/{}/{}.png".format(dirs["mask"], cls, stem)))
                continue
            if len(mask_paths) > 1:
                continue  # reported above
            entries.append({"image": paths[0], "mask": mask_paths[0], "class_name": cls,
                            "class_id": class_id, "stem": stem, "subset": subset})
    return entries, problems


def mix_in_entries(dataset_dir, counts, subset="train"):
    """Pairs of another data set to add to a training set: the first counts[cls] usable pairs
    (stems in natural order, as scan_dataset lists them) of each class cls of
    <dataset_dir>/<subset>, e.g. of single cells drawn by ``synth --single-cells``.

    counts: {class name (CLASS_NAMES): number of pairs}. Returns scan_dataset entries.
    Raises UserError when the folder is missing, a class has fewer pairs than asked, or a
    chosen pair does not decode, has a mask of another size or no cell in it (each is read
    once here, so that training cannot fail on it).
    """
    entries, problems = scan_dataset(dataset_dir, subset)
    for p in problems:
        if p["kind"] == "missing_folder":
            raise _fail(p["path"], p["message"],
                        "Give --mix-in a data set folder holding {}/image/<Class>/ and "
                        "{}/mask/<Class>/, e.g. made by python3 WBC.py synth "
                        "--single-cells".format(subset, subset))
    chosen = []
    for cls, count in counts.items():
        of_class = [e for e in entries if e["class_name"] == cls]
        if len(of_class) < count:
            raise _fail(os.path.join(os.fspath(dataset_dir), subset, "image", cls),
                        "{} usable {} image/mask pairs, {} asked to mix in".format(
                            len(of_class), cls, count),
                        "Ask for at most {}, or draw more (python3 WBC.py synth "
                        "--single-cells --out={})".format(
                            len(of_class), shlex.quote(os.fspath(dataset_dir)))
                        if of_class else "Leave {} out of --mix-in".format(cls))
        chosen += of_class[:count]
    for e in chosen:
        shape = read_image(e["image"]).shape
        if not mask_to_instances(read_mask(e["mask"]), shape, path=e["mask"]).shape[-1]:
            raise _fail(e["mask"], "no cell in the mask", "Mix in another image")
    return chosen


_SUMMARY = {
    "missing_mask": "images without a mask skipped",
    "missing_image": "masks without an image ignored",
    "unknown_class": "folders with an unknown class name skipped",
    "empty_class": "empty class folders",
    "duplicate_stem": "stems used by more than one file skipped",
    "unsupported_file": "files of an unsupported type ignored",
    "stray_file": "files outside a class folder ignored",
    "ignored_folder": "sub-folders inside class folders ignored",
}


def _summarise(problems):
    """One line per kind of problem: "12 images without a mask skipped (first: ...)"."""
    lines, kinds = [], {}
    for p in problems:
        kinds.setdefault(p["kind"], []).append(p)
    for kind, items in kinds.items():
        label = _SUMMARY.get(kind, kind.replace("_", " "))
        lines.append("{} {} (first: {}: {}; {})".format(
            len(items), label, items[0]["path"], items[0]["message"], items[0]["fix"]))
    return lines


def _merge_entries(entries, extra):
    """entries and extra in the order scan_dataset gives a folder holding both (class, then
    natural order of stems, then of file names); a UserError when two share a class and stem
    (their image ids would clash)."""
    merged = list(entries) + list(extra)
    seen = {}
    for e in merged:
        key = (e["class_name"], e["stem"])
        if key in seen:
            raise _fail(e["image"], "has the class and stem of {}".format(seen[key]),
                        "Rename one of them, or mix in other images")
        seen[key] = e["image"]
    return sorted(merged, key=lambda e: (e["class_id"], _natural_key(e["stem"]),
                                         _natural_key(os.path.basename(e["image"]))))


############################################################
#  Matterport-style dataset
############################################################

class WBCDataset(utils.Dataset):
    """White blood cells in the folder layout of this module (source "WBC").

    Usage (Matterport style)::

        dataset = WBCDataset()
        dataset.load_wbc("WBC", "train")
        dataset.prepare()
        image = dataset.load_image(i)            # uint8 [H, W, 3]
        masks, class_ids = dataset.load_mask(i)  # bool [H, W, N], int32 [N]
    """

    def load_wbc(self, dataset_dir, subset, exclude=(), extra=()):
        """Register the 5 classes and every usable image/mask pair of <dataset_dir>/<subset>.

        exclude: paths of files known to be broken (e.g. the error paths of
        :func:`check_dataset`); a pair whose image or mask is among them is left out.
        extra: entries of other folders to add (:func:`mix_in_entries`), ordered among the
        folder's own as if their files were in it (by class, then natural order of stems).
        Raises UserError when a folder is missing, no pair is usable or an extra pair has the
        class and stem of another. Skipped files are logged as warnings, one summary line per
        kind of problem.
        """
        for class_id, name in enumerate(CLASS_NAMES, start=1):
            self.add_class(SOURCE, class_id, name)
        entries, problems = scan_dataset(dataset_dir, subset)
        exclude = {os.path.abspath(p) for p in exclude}
        entries = [e for e in entries if os.path.abspath(e["image"]) not in exclude
                   and os.path.abspath(e["mask"]) not in exclude]
        for p in problems:
            if p["kind"] == "missing_folder":
                raise _fail(p["path"], p["message"], p["fix"])
        if not entries:
            first = next((p for p in problems if p["severity"] == "error"), None)
            detail = " ({} problems, first: {}: {})".format(
                len(problems), first["path"], first["message"]) if first else ""
            raise _fail(os.path.join(os.fspath(dataset_dir), subset),
                        "no usable image/mask pairs" + detail,
                        "Put images in image/<Class>/ and masks with the same stem in "
                        "mask/<Class>/; run 'WBC.py check' for details")
        for line in _summarise(problems):
            logger.warning("%s/%s: %s", dataset_dir, subset, line)
        entries = _merge_entries(entries, extra)
        for e in entries:
            self.add_image(SOURCE, image_id="{}/{}".format(e["class_name"], e["stem"]),
                           path=e["image"], mask_path=e["mask"], class_name=e["class_name"],
                           wbc_class_id=e["class_id"], stem=e["stem"], subset=subset)
        self._padding_noted = False

    def load_image(self, image_id):
        """uint8 [H, W, 3] RGB (see :func:`read_image`)."""
        return read_image(self.image_info[image_id]["path"])

    def load_mask(self, image_id):
        """(bool [H, W, N], int32 [N]): one instance per cell, all of the folder's class."""
        info = self.image_info[image_id]
        if info["source"] != SOURCE:
            return super().load_mask(image_id)
        shape = image_size(info["path"])
        mask, padded = fit_mask_to_image(read_mask(info["mask_path"]), shape, info["mask_path"])
        if padded and not getattr(self, "_padding_noted", False):
            self._padding_noted = True
            logger.info("Masks %d px smaller than their images (LISC) are padded by %d px "
                        "on each side (first: %s)", LISC_MARGIN, LISC_MARGIN // 2,
                        info["mask_path"])
        masks = _components(mask, default_min_area(shape))
        source_map = getattr(self, "class_from_source_map", None)
        key = "{}.{}".format(SOURCE, info["wbc_class_id"])
        class_id = source_map[key] if source_map else info["wbc_class_id"]
        return masks, np.full(masks.shape[-1], class_id, dtype=np.int32)

    def image_reference(self, image_id):
        """The image's path."""
        info = self.image_info[image_id]
        return info["path"] if info["source"] == SOURCE else super().image_reference(image_id)


############################################################
#  check
############################################################

def check_dataset(root):
    """Decode and check every pair of <root>/train and <root>/val (for ``WBC.py check``).

    Returns {"root", "usable" (train and val each have at least one pair that decodes
    and holds a cell: what `train` needs), "subsets": {subset: {"exists", "pairs",
    "usable", "images": {class: n}, "cells": {class: n}, "min_size": [h, w] | None,
    "max_size": [h, w] | None}}, "problems": [problem dicts with "subset"], "errors": n,
    "warnings": n}.
    images counts pairs that decode; min/max sizes are element-wise over them.
    """
    root = os.fspath(root)
    report = {"root": root, "usable": False, "subsets": {}, "problems": []}
    root_missing = not os.path.isdir(root)
    for subset in SUBSETS:
        entries, problems = scan_dataset(root, subset)
        if root_missing and subset != SUBSETS[0]:
            problems = []  # "dataset folder not found" is said once, under train
        exists = not root_missing and not any(p["kind"] == "missing_folder" for p in problems)
        stats = {"exists": exists,
                 "pairs": len(entries), "usable": 0,
                 "images": {c: 0 for c in CLASS_NAMES}, "cells": {c: 0 for c in CLASS_NAMES},
                 "min_size": None, "max_size": None}
        padded = []
        for e in entries:
            try:
                image = read_image(e["image"])
                mask, was_padded = fit_mask_to_image(read_mask(e["mask"]), image.shape,
                                                     e["mask"])
            except UserError as err:
                problems.append(_problem(
                    "error", getattr(err, "kind", "unreadable"), getattr(err, "path", e["image"]),
                    getattr(err, "problem", str(err)), getattr(err, "fix", "")))
                continue
            h, w = image.shape[:2]
            lo, hi = stats["min_size"] or [h, w], stats["max_size"] or [h, w]
            stats["min_size"] = [min(h, lo[0]), min(w, lo[1])]
            stats["max_size"] = [max(h, hi[0]), max(w, hi[1])]
            if was_padded:
                padded.append(e["mask"])
            min_area = default_min_area(image.shape)
            n = _components(mask, min_area).shape[-1]
            stats["images"][e["class_name"]] += 1
            stats["cells"][e["class_name"]] += n
            if n == 0:
                problems.append(_problem(
                    "warning", "no_cell", e["mask"],
                    "mask holds no cell (no non-zero area of {}+ px); the image is not used "
                    "for training".format(min_area),
                    "Draw the cell in the mask (any non-zero value) or remove the pair"))
                continue
            stats["usable"] += 1
            if np.count_nonzero(mask) > 0.9 * h * w:
                problems.append(_problem(
                    "warning", "mask_covers_image", e["mask"],
                    "mask covers over 90% of the image: is it inverted?",
                    "Background must be 0 (black) and cells non-zero"))
        if padded:
            problems.append(_problem(
                "warning", "lisc_padding", padded[0],
                "{} masks are {} px smaller than their images (LISC); they are padded by {} "
                "px on each side".format(len(padded), LISC_MARGIN, LISC_MARGIN // 2),
                "Nothing to do if these are LISC masks"))
        for p in problems:
            p["subset"] = subset
        report["problems"].extend(problems)
        report["subsets"][subset] = stats
    train = report["subsets"]["train"]
    val = report["subsets"]["val"]
    report["usable"] = train["usable"] > 0 and val["usable"] > 0
    if train["usable"]:
        for cls in CLASS_NAMES:
            if train["cells"][cls] == 0:
                report["problems"].append(_problem(
                    "warning", "missing_class", os.path.join(root, "train"),
                    "no training cell of class {}; the model cannot learn it".format(cls),
                    "Add {} images and masks to train".format(cls)))
                report["problems"][-1]["subset"] = "train"
            elif val["exists"] and val["cells"][cls] == 0:
                report["problems"].append(_problem(
                    "warning", "missing_class", os.path.join(root, "val"),
                    "class {} is in train but not in val; it cannot be evaluated".format(cls),
                    "Move some {} images (with their masks) to val".format(cls)))
                report["problems"][-1]["subset"] = "val"
    report["errors"] = sum(p["severity"] == "error" for p in report["problems"])
    report["warnings"] = sum(p["severity"] == "warning" for p in report["problems"])
    return report


def format_check_report(report):
    """Human-readable text of :func:`check_dataset`'s report: a table of images/cells per
    subset and class, image sizes, then every problem with its file and fix."""
    names = CLASS_NAMES + ["Total"]
    width = max(len(n) for n in names) + 1
    unusable = [s for s in SUBSETS if not report["subsets"].get(s, {}).get("usable")]
    lines = ["Dataset {}: {}".format(report["root"], "usable" if report["usable"] else
                                     "NOT usable ({} has no usable image/mask pair)".format(
                                         " and ".join(unusable))),
             "",
             "{:<14}".format("images/cells") + "".join("{:>{}}".format(n, width + 2)
                                                      for n in names)]
    for subset, s in report["subsets"].items():
        if not s["exists"]:
            lines.append("{:<14}(missing)".format(subset))
            continue
        cells = ["{}/{}".format(s["images"][c], s["cells"][c]) for c in CLASS_NAMES]
        cells.append("{}/{}".format(sum(s["images"].values()), sum(s["cells"].values())))
        lines.append("{:<14}".format(subset) + "".join("{:>{}}".format(c, width + 2)
                                                       for c in cells))
    lines.append("")
    for subset, s in report["subsets"].items():
        if s["min_size"]:
            lines.append("{} image sizes (HxW): {}x{} .. {}x{}".format(
                subset, s["min_size"][0], s["min_size"][1], s["max_size"][0], s["max_size"][1]))
    lines.append("{} error(s), {} warning(s)".format(report["errors"], report["warnings"]))
    for p in sorted(report["problems"], key=lambda p: p["severity"] != "error"):
        lines.append("{:<8}{}".format(p["severity"].upper(), p["path"]))
        lines.append("        {}".format(p["message"]))
        if p["fix"]:
            lines.append("        fix: {}".format(p["fix"]))
    return "\n".join(lines)
