"""LISC import: the LISC archive as distributed, copied into the layout of :mod:`wbc.dataset`.

Reads the archive as distributed (``Main Dataset`` images, ``Ground Truth Segmentation``
expert-1 masks), splits it per class into train/val with a seed and writes
``<out>/<train|val>/image/<Class>/`` and ``<out>/<train|val>/mask/<Class>/``. The source is
only read; output files are written atomically and a second identical import is a no-op.

Public API: :func:`import_lisc`, :func:`format_import_report`.
"""
import filecmp
import math
import os
import random
import re
import shutil

import numpy as np
from PIL import Image

from mrcnn.durable import creating
from wbc.dataset import (
    CLASS_NAMES, IMAGE_EXTS, MASK_EXTS, SUBSETS, _fail, _is_hidden_or_junk, _natural_key,
    fit_mask_to_image, match_class, read_image, read_mask)
from wbc.errors import UserError


def _norm(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _subdirs(parent):
    try:
        names = sorted(os.listdir(parent), key=_natural_key)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(parent, n))]


def _find_lisc_dir(source, test):
    """The sub-folder of source whose normalised name passes test; also looked for one
    level down when source holds a single folder (e.g. "LISC Database")."""
    parents = [source]
    if len(_subdirs(source)) == 1:
        parents.append(os.path.join(source, _subdirs(source)[0]))
    for parent in parents:
        hits = [d for d in _subdirs(parent) if test(_norm(d))]
        if hits:
            return os.path.join(parent, hits[0])
    return None


def _files(folder, exts):
    try:
        names = sorted(os.listdir(folder), key=_natural_key)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if not _is_hidden_or_junk(n)
            and os.path.splitext(n)[1].lower() in exts
            and os.path.isfile(os.path.join(folder, n))]


def _split_count(n, val_fraction):
    """Images of a class that go to val: round(n * fraction), and when n >= 2 and
    fraction > 0 at least 1 in val and at least 1 in train."""
    if n < 2 or val_fraction <= 0:
        return 0
    return min(max(int(math.floor(n * val_fraction + 0.5)), 1), n - 1)


def _write_new(target, write):
    """write(f) into a new file at target, whole or not at all (mrcnn.durable.creating);
    UserError if target appears meanwhile (two imports into one folder at once)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
        with creating(target, "wb") as f:
            write(f)
    except FileExistsError:
        raise _fail(target, "appeared while importing",
                    "Do not run two imports at once") from None


def _open_source(path):
    """path opened for reading; UserError naming it if it cannot be."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _fail(path, "cannot read ({})".format(exc.strerror or exc),
                    "Check that the file is readable") from None


def _add_unique(table, stem, path, report):
    """table[stem] = path; a second file of the same stem makes both invalid (reported)."""
    if stem in table:
        if table[stem] is not None:
            report["invalid"].append({"path": table[stem], "message": "{}: another file has "
                                      "the same number {!r}; both skipped".format(table[stem],
                                                                                  stem)})
        report["invalid"].append({"path": path, "message": "{}: another file has the same "
                                  "number {!r}; both skipped".format(path, stem)})
        table[stem] = None
    else:
        table[stem] = path


def _same_mask(path, mask):
    try:
        return np.array_equal(read_mask(path), mask)
    except UserError:
        return False


def import_lisc(source, out, val_fraction=0.2, seed=0, progress=True):
    """Import the LISC archive as distributed into the dataset layout, split train/val.

    Reads ``<source>/Main Dataset/<cls>/<N>.bmp`` and ``<source>/Ground Truth
    Segmentation/<cls>/areaforexpert1/<N>_expert.bmp`` (cls: Baso, eosi, lymp, mono, neut;
    names matched case-insensitively, spaces/underscores ignored; a single wrapping folder
    such as "LISC Database" is entered). Writes ``<out>/<train|val>/image/<Class>/<N>.bmp``
    (bytes copied unchanged) and ``<out>/<train|val>/mask/<Class>/<N>.png`` (grey, size
    unchanged: 8 px smaller masks are padded when loaded).

    The split is per class (stratified) and per source image, seeded: the same source,
    fraction and seed give the same split. "mixt" (mixed cells, no single class), images
    without an expert-1 mask, masks without an image and unreadable files are counted in
    the report, not imported. The source is only read. Existing identical output files are
    left alone (a second import is a no-op); if any target differs, or the same image sits
    in the other subset, UserError is raised before anything is written. Files are written
    to a hidden temporary name and renamed.

    Returns {"source", "out", "val_fraction", "seed", "counts": {subset: {class: n}},
    "written", "already_present", "mixt_images", "images_without_mask",
    "masks_without_image", "unknown_folders", "invalid": [{"path", "message"}],
    "missing_classes"}.
    """
    if not 0 <= float(val_fraction) < 1:
        raise UserError("val_fraction={}: must be in [0, 1). Pass e.g. 0.2".format(val_fraction))
    source, out = os.path.abspath(os.fspath(source)), os.path.abspath(os.fspath(out))
    expected = ("expected '{0}/Main Dataset/<Baso|eosi|lymp|mono|neut|mixt>/N.bmp' and "
                "'{0}/Ground Truth Segmentation/<cls>/areaforexpert1/N_expert.bmp'".format(source))
    if not os.path.isdir(source):
        raise _fail(source, "LISC folder not found ({})".format(expected),
                    "Pass the unpacked LISC archive as --source")
    if os.path.exists(out) and not os.path.isdir(out):
        raise _fail(out, "output path exists and is not a folder",
                    "Choose another --out")
    real_src, real_out = os.path.realpath(source), os.path.realpath(out)
    try:
        inside = os.path.commonpath([real_src, real_out]) == real_src
    except ValueError:  # different drives
        inside = False
    if inside:
        raise _fail(out, "output folder is inside the LISC source folder",
                    "Choose an --out outside {} (the source is never modified)".format(source))
    main = _find_lisc_dir(source, lambda n: n.startswith("maindata"))
    truth = _find_lisc_dir(source, lambda n: n.startswith("groundtruth"))
    for found, what in ((main, "'Main Dataset'"), (truth, "'Ground Truth Segmentation'")):
        if found is None:
            raise _fail(source, "no {} folder ({})".format(what, expected),
                        "Pass the folder of the unpacked LISC archive as --source")

    report = {"source": source, "out": out, "val_fraction": float(val_fraction), "seed": seed,
              "counts": {s: {c: 0 for c in CLASS_NAMES} for s in SUBSETS},
              "written": 0, "already_present": 0, "mixt_images": 0,
              "images_without_mask": [], "masks_without_image": [], "unknown_folders": [],
              "invalid": [], "missing_classes": []}
    images = {}                                            # class -> {stem: path}
    for d in _subdirs(main):
        path = os.path.join(main, d)
        if _norm(d).startswith("mix"):
            report["mixt_images"] += len(_files(path, IMAGE_EXTS))
            continue
        cls = match_class(d.strip())
        if cls is None:
            report["unknown_folders"].append(path)
            continue
        for f in _files(path, IMAGE_EXTS):
            _add_unique(images.setdefault(cls, {}), os.path.splitext(os.path.basename(f))[0],
                        f, report)
    masks = {}                                             # class -> {stem: path}
    for d in _subdirs(truth):
        cls = match_class(d.strip())
        if cls is None:
            if not _norm(d).startswith("mix"):
                report["unknown_folders"].append(os.path.join(truth, d))
            continue
        experts = [e for e in _subdirs(os.path.join(truth, d)) if _norm(e).endswith("expert1")]
        folder = os.path.join(truth, d, experts[0]) if experts else os.path.join(truth, d)
        for f in _files(folder, MASK_EXTS):
            stem = re.sub(r"[ _-]?expert\d*$", "", os.path.splitext(os.path.basename(f))[0],
                          flags=re.I)
            _add_unique(masks.setdefault(cls, {}), stem, f, report)
    report["missing_classes"] = [c for c in CLASS_NAMES if c not in images]

    plan = []                                              # (subset, class, stem, img, mask)
    for cls in CLASS_NAMES:
        cls_images = {k: v for k, v in images.get(cls, {}).items() if v is not None}
        cls_masks = {k: v for k, v in masks.get(cls, {}).items() if v is not None}
        report["masks_without_image"] += [cls_masks[s] for s in sorted(cls_masks, key=_natural_key)
                                          if s not in cls_images]
        stems = []
        for stem in sorted(cls_images, key=_natural_key):
            if stem in cls_masks:
                stems.append(stem)
            else:
                report["images_without_mask"].append(cls_images[stem])
        order = list(stems)
        random.Random("lisc-split:{}:{}".format(seed, cls)).shuffle(order)
        val = set(order[:_split_count(len(order), float(val_fraction))])
        for stem in stems:
            plan.append(("val" if stem in val else "train", cls, stem,
                         cls_images[stem], cls_masks[stem]))

    def targets(subset, cls, stem, img_path):
        ext = os.path.splitext(img_path)[1].lower()
        base = os.path.join(out, subset)
        return (os.path.join(base, "image", cls, stem + ext),
                os.path.join(base, "mask", cls, stem + ".png"))

    # Pass 1: validate sources, find conflicts; nothing is written yet.
    todo, conflicts = [], []
    for subset, cls, stem, img_path, mask_path in plan:
        try:
            image_shape = read_image(img_path).shape
            mask = read_mask(mask_path)
            fit_mask_to_image(mask, image_shape, mask_path)
        except UserError as err:
            report["invalid"].append({"path": getattr(err, "path", img_path),
                                      "message": str(err)})
            continue
        img_t, mask_t = targets(subset, cls, stem, img_path)
        for t in (img_t, mask_t):
            if os.path.islink(t) and not os.path.exists(t):
                raise _fail(t, "is a broken symbolic link",
                            "Remove it, or import into a new --out folder")
        other = "val" if subset == "train" else "train"
        for t in targets(other, cls, stem, img_path):
            if os.path.exists(t):
                conflicts.append(t)
        if os.path.exists(img_t) and not filecmp.cmp(img_path, img_t, shallow=False):
            conflicts.append(img_t)
        if os.path.exists(mask_t) and not _same_mask(mask_t, mask):
            conflicts.append(mask_t)
        todo.append((subset, cls, img_path, mask_path, img_t, mask_t))
    if conflicts:
        raise _fail(conflicts[0], "{} file(s) in {} differ from this import (or hold another "
                    "split)".format(len(conflicts), out),
                    "Import into a new --out folder, or delete {} first".format(out))

    # Pass 2: write (mask first, so a crash leaves at worst a mask without its image).
    bar = todo
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(todo, desc="import-lisc", unit="image")
        except ImportError:
            pass
    for subset, cls, img_path, mask_path, img_t, mask_t in bar:
        wrote, target = False, mask_t
        try:
            if not os.path.exists(mask_t):
                mask = read_mask(mask_path)
                _write_new(mask_t, lambda f: Image.fromarray(mask).save(f, format="PNG"))
                wrote = True
            target = img_t
            if not os.path.exists(img_t):
                with _open_source(img_path) as src:
                    _write_new(img_t, lambda f: shutil.copyfileobj(src, f))
                wrote = True
        except OSError as exc:
            raise _fail(target, "cannot write ({})".format(
                exc.strerror or exc), "Check free disk space and permissions of {}; running "
                "the same import again completes it".format(out)) from None
        report["written" if wrote else "already_present"] += 1
        report["counts"][subset][cls] += 1
    return report


def format_import_report(report):
    """Human-readable summary of :func:`import_lisc`'s report."""
    lines = ["LISC {} -> {}: {} images imported ({} new, {} already present)".format(
        report["source"], report["out"], report["written"] + report["already_present"],
        report["written"], report["already_present"])]
    for subset in SUBSETS:
        lines.append("  {:<6}".format(subset) + "  ".join(
            "{} {}".format(c, report["counts"][subset][c]) for c in CLASS_NAMES))
    skipped = [("mixed-cell images ('mixt', no single class) not imported", report["mixt_images"]),
               ("images without an expert-1 mask not imported",
                len(report["images_without_mask"])),
               ("masks without an image ignored", len(report["masks_without_image"])),
               ("unknown folders ignored", len(report["unknown_folders"])),
               ("unreadable or mismatched files skipped", len(report["invalid"]))]
    for label, n in skipped:
        if n:
            lines.append("  {} {}".format(n, label))
    for key in ("images_without_mask", "masks_without_image", "unknown_folders"):
        lines += ["    {}".format(p) for p in report[key]]
    lines += ["    {}".format(p["message"]) for p in report["invalid"]]
    if report["missing_classes"]:
        lines.append("  no images for: {}".format(", ".join(report["missing_classes"])))
    return "\n".join(lines)
