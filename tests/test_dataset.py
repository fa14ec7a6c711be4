"""wbc.dataset and wbc.lisc: folder layout, decoding, masks -> cells, check and LISC import.

Every test builds its own tiny files under tmp_path; the real-data test reads
../shared/data/wbc-zheng2018 and skips when it is absent.
"""
import hashlib
import logging
import os
import shutil
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import SHARED_DATA
from wbc.dataset import (
    CLASS_NAMES, WBCDataset, check_dataset, default_min_area, fit_mask_to_image,
    format_check_report, image_size, mask_to_instances, match_class, mix_in_entries,
    read_image, read_mask, scan_dataset)
from wbc.errors import UserError
from wbc.lisc import format_import_report, import_lisc

H, W = 40, 48  # default size of the generated images


# ---------------------------------------------------------------- helpers

def save(path, array, **kwargs):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(array).save(str(path), **kwargs)
    return str(path)


def disc(shape, centre, radius, value=255, out=None):
    """uint8 mask with a filled disc; cytoplasm at `value`, a nucleus at 255 inside."""
    out = np.zeros(shape, np.uint8) if out is None else out
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    d2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    out[d2 <= radius ** 2] = value
    out[d2 <= (radius / 2) ** 2] = 255
    return out


def smear(shape=(H, W), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)


def make_pair(root, subset, folder, stem, img_ext=".bmp", mask=None, mask_ext=".png",
              mask_folder=None, shape=(H, W)):
    """Write image <root>/<subset>/image/<folder>/<stem><img_ext> and its mask."""
    img = save(os.path.join(root, subset, "image", folder, stem + img_ext), smear(shape))
    if mask is None:
        mask = disc(shape, (shape[0] // 2, shape[1] // 2), min(shape) // 4, value=128)
    msk = None
    if mask is not False:
        msk = save(os.path.join(root, subset, "mask", mask_folder or folder, stem + mask_ext),
                   mask)
    return img, msk


def kinds(problems):
    return [p["kind"] for p in problems]


def tree_hash(top):
    """{relative path: sha256} of every file under top."""
    out = {}
    for dirpath, _, files in os.walk(top):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, top)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def components_bfs(binary):
    """Independent oracle: 8-connected components (lists of pixels) by flood fill."""
    h, w = binary.shape
    seen = np.zeros_like(binary, bool)
    comps = []
    for y in range(h):
        for x in range(w):
            if binary[y, x] and not seen[y, x]:
                stack, comp = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    comp.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and binary[ny, nx] \
                                    and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                comps.append(comp)
    return comps


# ---------------------------------------------------------------- class names

@pytest.mark.parametrize("name,expected", [
    ("Basophil", "Basophil"), ("basophil", "Basophil"), ("BASOPHILS", "Basophil"),
    ("Baso", "Basophil"), ("eosi", "Eosinophil"), ("Eosinophil", "Eosinophil"),
    ("lymp", "Lymphocyte"), ("Lymphocytes", "Lymphocyte"), ("mono", "Monocyte"),
    ("MONOCYTE", "Monocyte"), ("neut", "Neutrophil"), ("Neutrophils", "Neutrophil"),
    (" Neutrophil ", "Neutrophil"),
    ("mixt", None), ("eos", None), ("cells", None), ("", None), ("Platelet", None),
    ("Basophilx", None)])
def test_match_class(name, expected):
    assert match_class(name) == expected


# ---------------------------------------------------------------- decoding images

def _png16_rgb(path, array):
    """Write a 16-bit RGB PNG by hand (Pillow cannot)."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_read_image_modes_become_rgb_uint8(tmp_path):
    rgb = smear()
    grey = rgb[..., 0]
    cases = {}
    cases["rgb.bmp"] = (save(tmp_path / "rgb.bmp", rgb), rgb)
    cases["rgb.png"] = (save(tmp_path / "rgb.png", rgb), rgb)
    cases["rgb.tif"] = (save(tmp_path / "rgb.tif", rgb), rgb)
    cases["grey.png"] = (save(tmp_path / "grey.png", grey), np.stack([grey] * 3, -1))
    cases["grey.bmp"] = (save(tmp_path / "grey.bmp", grey), np.stack([grey] * 3, -1))
    rgba = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], -1)
    cases["rgba.png"] = (save(tmp_path / "rgba.png", rgba), rgb)
    la = Image.fromarray(grey).convert("LA")
    la.save(tmp_path / "la.png")
    cases["la.png"] = (str(tmp_path / "la.png"), np.stack([grey] * 3, -1))
    pal = Image.fromarray(rgb).quantize(colors=16)
    pal.save(tmp_path / "pal.png")
    cases["pal.png"] = (str(tmp_path / "pal.png"), np.array(pal.convert("RGB")))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palt.png", transparency=0)
    cases["palt.png"] = (str(tmp_path / "palt.png"), np.array(pal.convert("RGB")))
    g16 = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 31).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    expect16 = np.round(g16 / 65535.0 * 255).astype(np.uint8)
    cases["g16.png"] = (str(tmp_path / "g16.png"), np.stack([expect16] * 3, -1))
    Image.fromarray(g16).save(tmp_path / "g16.tif")
    cases["g16.tif"] = (str(tmp_path / "g16.tif"), np.stack([expect16] * 3, -1))
    c16 = np.stack([g16, g16 // 2, 65535 - g16], -1)
    _png16_rgb(str(tmp_path / "c16.png"), c16)
    cases["c16.png"] = (str(tmp_path / "c16.png"), None)
    bw = Image.fromarray(grey > 128).convert("1")
    bw.save(tmp_path / "bw.png")
    cases["bw.png"] = (str(tmp_path / "bw.png"), np.stack([(grey > 128) * np.uint8(255)] * 3, -1))
    for name, (path, expected) in cases.items():
        out = read_image(path)
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), name
        if expected is not None:
            np.testing.assert_array_equal(out, expected, err_msg=name)
    # 16-bit colour: scaled by the 16-bit range (within rounding of Pillow's 8-bit read)
    c16_out = read_image(cases["c16.png"][0]).astype(int)
    assert np.abs(c16_out - np.round(c16 / 257.0)).max() <= 1
    jpg = save(tmp_path / "x.JPG", rgb, quality=95)
    assert read_image(jpg).shape == (H, W, 3)
    assert image_size(jpg) == (H, W)


def test_read_image_16bit_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    g = (np.arange(H * W).reshape(H, W) * 29 % 65536).astype(np.uint16)
    c16 = np.stack([g, g // 3, 65535 - g], -1)
    tifffile.imwrite(str(tmp_path / "c16.tif"), c16, photometric="rgb")
    out = read_image(tmp_path / "c16.tif")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - np.round(c16 / 257.0)).max() <= 1


def _big_bmp(path, width, height):
    """A tiny file whose BMP header claims width x height pixels."""
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path)
    data = bytearray(open(path, "rb").read())
    data[18:26] = struct.pack("<ii", width, height)
    open(path, "wb").write(bytes(data))
    return str(path)


@pytest.mark.parametrize("reader", [read_image, read_mask, image_size])
def test_bad_files_raise_user_error_naming_the_file(tmp_path, reader):
    good = save(tmp_path / "good.bmp", smear())
    data = open(good, "rb").read()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    cases = {"empty.png": "empty", "notes.png": "not an image", "missing.png": "not found"}
    if reader is not image_size:  # truncation shows only when decoding
        (tmp_path / "trunc.bmp").write_bytes(data[:len(data) // 2])
        cases["trunc.bmp"] = "truncated"
    os.mkdir(tmp_path / "folder.png")
    cases["folder.png"] = "folder"
    for name, words in cases.items():
        with pytest.raises(UserError) as info:
            reader(tmp_path / name)
        assert name in str(info.value) and words in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [(12000, 10000), (20000, 20000)])
def test_absurd_size_refused_before_decoding(tmp_path, size):
    # 120 Mpx passes Pillow's own bomb check, 400 Mpx does not; both are refused by
    # name and size, and the file (with no pixel data) is never decoded.
    path = _big_bmp(tmp_path / "huge.bmp", *size)
    for reader in (read_image, read_mask, image_size):
        with pytest.raises(UserError) as info:
            reader(path)
        assert "huge.bmp" in str(info.value) and "megapixels" in str(info.value)


# ---------------------------------------------------------------- decoding masks

def test_read_mask_grey_colour_alpha_16bit(tmp_path):
    m = disc((H, W), (20, 24), 10, value=128)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m.png", m)), m)
    np.testing.assert_array_equal(read_mask(save(tmp_path / "m.bmp", m)), m)
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 1] = m           # a green cell
    colour[0, 0] = (0, 0, 9)     # a blue stray pixel
    got = read_mask(save(tmp_path / "c.png", colour))
    assert got.dtype == np.uint8 and got.shape == (H, W)
    np.testing.assert_array_equal(got, colour.max(-1))
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = 255          # white everywhere, but only the cell is opaque
    rgba[..., 3] = (m > 0) * 255
    np.testing.assert_array_equal(read_mask(save(tmp_path / "a.png", rgba)) > 0, m > 0)
    labels = np.zeros((H, W), np.uint16)
    labels[2:6, 2:6], labels[10:20, 10:20] = 1, 40000   # label values survive scaling
    got16 = read_mask(save(tmp_path / "l16.png", labels))
    np.testing.assert_array_equal(got16 > 0, labels > 0)
    assert got16[15, 15] == np.ceil(40000 * 255 / 65535)
    bw = read_mask(save(tmp_path / "bw.png", m > 0))
    np.testing.assert_array_equal(bw > 0, m > 0)


# ---------------------------------------------------------------- mask -> instances

def test_stray_pixels_are_not_cells():
    m = disc((120, 120), (60, 60), 25, value=128)
    m[2, 2] = 20                      # single stray pixels of low value
    m[110:113, 5:8] = 45              # a 9 px speck
    m[5, 100:129 - 10] = 2            # a 19 px streak
    inst = mask_to_instances(m, (120, 120, 3))
    assert inst.dtype == bool and inst.shape == (120, 120, 1)
    np.testing.assert_array_equal(inst[..., 0], disc((120, 120), (60, 60), 25) > 0)
    assert default_min_area((120, 120)) == 30
    assert default_min_area((576, 720)) == 415
    assert mask_to_instances(m, (120, 120), min_area=1).shape[-1] == 4


def test_multiple_cells_give_n_instances_and_two_grey_levels_are_one_cell():
    m = disc((80, 100), (20, 20), 12, value=128)      # nucleus 255 inside cytoplasm 128
    disc((80, 100), (50, 70), 15, value=60, out=m)
    m[70:78, 5:13] = 200                               # a square cell at the edge
    m[0:6, 90:96] = 1                                  # value 1 is still a cell if big
    inst = mask_to_instances(m, (80, 100))
    assert inst.shape == (80, 100, 4)
    assert not np.any(inst.sum(-1) > 1)                # disjoint
    np.testing.assert_array_equal(inst.any(-1), m > 0)
    # diagonal touch joins (8-connectivity)
    d = np.zeros((80, 100), np.uint8)
    d[10:20, 10:20] = 255
    d[20:30, 20:30] = 255
    assert mask_to_instances(d, (80, 100)).shape[-1] == 1
    empty = mask_to_instances(np.zeros((80, 100), np.uint8), (80, 100))
    assert empty.shape == (80, 100, 0) and empty.dtype == bool


def test_lisc_mask_8px_smaller_is_padded_centred():
    small = np.zeros((568, 712), np.uint8)
    small[0, :] = 255                       # touches the mask's top edge
    small[100:200, 300:400] = 128
    inst = mask_to_instances(small, (576, 720, 3))
    assert inst.shape == (576, 720, 2)
    union = inst.any(-1)
    assert union[4, 4:716].all() and not union[:4].any() and not union[4, :4].any()
    assert union[104:204, 304:404].all() and union.sum() == 712 + 100 * 100
    padded, was_padded = fit_mask_to_image(small, (576, 720))
    assert was_padded and padded.shape == (576, 720)
    np.testing.assert_array_equal(padded[4:-4, 4:-4], small)
    assert fit_mask_to_image(padded, (576, 720))[1] is False


@pytest.mark.parametrize("mask_shape", [(568, 720), (576, 712), (560, 704), (584, 728),
                                        (720, 576), (569, 713)])
def test_other_size_mismatch_raises_naming_mask_sizes_and_fix(mask_shape):
    with pytest.raises(UserError) as info:
        mask_to_instances(np.zeros(mask_shape, np.uint8), (576, 720),
                          path="WBC/train/mask/Basophil/7.png")
    msg = str(info.value)
    assert "WBC/train/mask/Basophil/7.png" in msg
    assert "{}x{}".format(mask_shape[1], mask_shape[0]) in msg and "720x576" in msg
    assert "same size" in msg


# ---------------------------------------------------------------- scanning

def test_scan_pairs_by_stem_within_class(tmp_path):
    root = str(tmp_path / "WBC")
    make_pair(root, "train", "Neutrophil", "1")
    make_pair(root, "train", "neut", "2", img_ext=".PNG", mask_ext=".bmp",
              mask_folder="Neutrophils")
    make_pair(root, "train", "Baso", "1", img_ext=".tif", mask_folder="basophil")
    make_pair(root, "train", "Lymphocyte", "10", img_ext=".jpg")
    make_pair(root, "train", "Lymphocyte", "9", img_ext=".jpeg", mask_ext=".tiff")
    open(os.path.join(root, "train", "image", "Lymphocyte", ".DS_Store"), "w").close()
    open(os.path.join(root, "train", "mask", "Lymphocyte", "._9.png"), "w").close()
    open(os.path.join(root, "train", "image", "Lymphocyte", "Thumbs.db"), "w").close()
    entries, problems = scan_dataset(root, "train")
    assert problems == []
    got = {(e["class_name"], e["stem"]): e for e in entries}
    assert list(got) == [("Basophil", "1"), ("Lymphocyte", "9"), ("Lymphocyte", "10"),
                         ("Neutrophil", "1"), ("Neutrophil", "2")]     # class, natural order
    assert [e["stem"] for e in entries if e["class_name"] == "Lymphocyte"] == ["9", "10"]
    for (cls, stem), e in got.items():
        assert e["class_id"] == CLASS_NAMES.index(cls) + 1 and e["subset"] == "train"
        assert os.path.splitext(os.path.basename(e["image"]))[0] == stem
        assert os.path.splitext(os.path.basename(e["mask"]))[0] == stem
        assert match_class(os.path.basename(os.path.dirname(e["image"]))) == cls
        assert match_class(os.path.basename(os.path.dirname(e["mask"]))) == cls
    # the Basophil "1" never pairs with the Neutrophil "1" mask
    assert "asophil" in got[("Basophil", "1")]["mask"]


def test_scan_reports_every_kind_of_problem(tmp_path):
    root = str(tmp_path / "WBC")
    make_pair(root, "train", "Monocyte", "ok")
    make_pair(root, "train", "Monocyte", "lonely", mask=False)            # no mask
    save(os.path.join(root, "train", "mask", "Monocyte", "orphan.png"),
         np.zeros((H, W), np.uint8))                                       # no image
    make_pair(root, "train", "Monocyte", "twin", img_ext=".png")
    save(os.path.join(root, "train", "image", "Monocyte", "twin.bmp"), smear())  # same stem
    make_pair(root, "train", "Platelets", "p1")                           # unknown class
    os.makedirs(os.path.join(root, "train", "image", "Eosinophil"))       # empty class
    make_pair(root, "train", "Monocyte", "gif", img_ext=".gif", mask=False)   # unsupported
    save(os.path.join(root, "train", "mask", "Monocyte", "jmask.jpg"), np.zeros((H, W), np.uint8))
    save(os.path.join(root, "train", "image", "loose.png"), smear())       # outside a class
    make_pair(root, "train", "Monocyte", "Case", mask=False)
    save(os.path.join(root, "train", "mask", "Monocyte", "case.png"), np.zeros((H, W), np.uint8))
    entries, problems = scan_dataset(root, "train")
    assert [e["stem"] for e in entries] == ["ok"]
    by_kind = {}
    for p in problems:
        assert set(p) == {"severity", "kind", "path", "message", "fix"}
        assert p["severity"] in ("error", "warning") and p["fix"]
        by_kind.setdefault(p["kind"], []).append(p)
    assert {os.path.basename(p["path"]) for p in by_kind["missing_mask"]} == {"lonely.bmp",
                                                                              "Case.bmp"}
    assert all(p["severity"] == "error" for p in by_kind["missing_mask"])
    assert any("rename it to 'Case'" in p["message"] for p in by_kind["missing_mask"])
    assert {os.path.basename(p["path"]) for p in by_kind["missing_image"]} == {"orphan.png",
                                                                               "case.png"}
    assert [os.path.basename(p["path"]) for p in by_kind["duplicate_stem"]] == ["twin.bmp"]
    assert {os.path.basename(p["path"]) for p in by_kind["unknown_class"]} == {"Platelets"}
    assert len(by_kind["unknown_class"]) == 2                             # image/ and mask/
    assert [os.path.basename(p["path"]) for p in by_kind["empty_class"]] == ["Eosinophil"]
    assert {os.path.basename(p["path"]) for p in by_kind["unsupported_file"]} == {"gif.gif",
                                                                                  "jmask.jpg"}
    assert any("lossless" in p["fix"] for p in by_kind["unsupported_file"])
    assert [os.path.basename(p["path"]) for p in by_kind["stray_file"]] == ["loose.png"]


def test_missing_folders(tmp_path):
    _, problems = scan_dataset(tmp_path / "nope", "train")
    assert kinds(problems) == ["missing_folder"] and problems[0]["severity"] == "error"
    os.makedirs(tmp_path / "WBC" / "train" / "image" / "Basophil")
    _, problems = scan_dataset(tmp_path / "WBC", "train")
    assert kinds(problems) == ["missing_folder"] and problems[0]["path"].endswith("mask")
    _, problems = scan_dataset(tmp_path / "WBC", "val")
    assert problems[0]["path"].endswith("val")
    for root, subset in ((tmp_path / "nope", "train"), (tmp_path / "WBC", "train"),
                         (tmp_path / "WBC", "val")):
        with pytest.raises(UserError) as info:
            WBCDataset().load_wbc(str(root), subset)
        assert str(root) in str(info.value)
    # folders exist but nothing pairs
    os.makedirs(tmp_path / "WBC" / "train" / "mask" / "Basophil")
    with pytest.raises(UserError, match="no usable image/mask pairs"):
        WBCDataset().load_wbc(str(tmp_path / "WBC"), "train")


# ---------------------------------------------------------------- WBCDataset

def test_wbc_dataset_loads_images_and_masks(tmp_path, caplog):
    root = str(tmp_path / "WBC")
    two = disc((H, W), (10, 10), 6, value=128)
    disc((H, W), (28, 34), 7, value=128, out=two)
    two[0, W - 1] = 30                                        # stray pixel
    make_pair(root, "train", "Eosinophil", "a", mask=two)
    make_pair(root, "train", "mono", "b", img_ext=".png")
    for i in range(3):
        make_pair(root, "train", "Monocyte", "nomask{}".format(i), mask=False)
    lisc = np.zeros((H - 8, W - 8), np.uint8)
    lisc[10:20, 10:30] = 255
    make_pair(root, "train", "Lymphocyte", "c", mask=lisc)
    with caplog.at_level(logging.WARNING, logger="wbc.dataset"):
        ds = WBCDataset()
        ds.load_wbc(root, "train")
    summary = [r.getMessage() for r in caplog.records]
    assert len(summary) == 1 and "3 images without a mask skipped (first: " in summary[0]
    assert "nomask0" in summary[0]
    ds.prepare()
    assert ds.num_images == 3 and ds.class_names == ["BG"] + CLASS_NAMES
    refs = {os.path.basename(ds.image_reference(i)): i for i in ds.image_ids}
    masks, ids = ds.load_mask(refs["a.bmp"])
    assert masks.dtype == bool and masks.shape == (H, W, 2)
    assert ids.dtype == np.int32 and list(ids) == [CLASS_NAMES.index("Eosinophil") + 1] * 2
    masks, ids = ds.load_mask(refs["b.png"])
    assert masks.shape == (H, W, 1) and list(ids) == [CLASS_NAMES.index("Monocyte") + 1]
    masks, ids = ds.load_mask(refs["c.bmp"])
    assert masks.shape == (H, W, 1) and masks[14:24, 14:34, 0].all() and masks.sum() == 200
    image = ds.load_image(refs["b.png"])
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)


def mixed_and_copied(tmp_path, counts):
    """(tmp_path/real's train subset with `counts` pairs of tmp_path/drawn mixed in, the same
    with those pairs' files copied into a copy of real, the mixed-in entries)."""
    real, drawn, both = (str(tmp_path / name) for name in ("real", "drawn", "both"))
    extra = mix_in_entries(drawn, counts)
    mixed = WBCDataset()
    mixed.load_wbc(real, "train", extra=extra)
    shutil.copytree(real, both)
    for e in extra:
        for kind in ("image", "mask"):
            folder = os.path.join(both, "train", kind, e["class_name"])
            os.makedirs(folder, exist_ok=True)
            shutil.copy(e[kind], folder)
    copied = WBCDataset()
    copied.load_wbc(both, "train")
    return mixed, copied, extra


def test_mixed_in_pairs_train_as_if_their_files_were_in_the_folder(tmp_path):
    """--mix-in's pairs: the first N of a class in natural order of stems (s4, s9, s14, not
    s14 first), ordered among the data set's own exactly as a folder holding both lists them."""
    real, drawn = str(tmp_path / "real"), str(tmp_path / "drawn")
    for stem in ("cellavision_089", "tecom_291"):
        make_pair(real, "train", "Basophil", stem)
    make_pair(real, "train", "Monocyte", "m1")
    for stem in ("s14", "s4", "s9", "s20"):
        make_pair(drawn, "train", "Basophil", stem, img_ext=".png")
    make_pair(drawn, "train", "Eosinophil", "s5", img_ext=".png")
    make_pair(drawn, "train", "Monocyte", "s6", img_ext=".png")

    mixed, copied, extra = mixed_and_copied(tmp_path, {"Basophil": 3, "Eosinophil": 1})
    assert [(e["class_name"], e["stem"]) for e in extra] == [
        ("Basophil", "s4"), ("Basophil", "s9"), ("Basophil", "s14"), ("Eosinophil", "s5")]
    listed = [[(i["class_name"], i["stem"], os.path.basename(i["path"])) for i in ds.image_info]
              for ds in (mixed, copied)]
    assert listed[0] == listed[1] and len(listed[0]) == 7
    assert [i["stem"] for i in mixed.image_info][:5] == [
        "cellavision_089", "s4", "s9", "s14", "tecom_291"]
    assert mixed.image_info[1]["path"].startswith(drawn)


def test_mixing_in_more_than_there_is_or_a_clashing_stem_is_a_clear_error(tmp_path):
    real, drawn = str(tmp_path / "real"), str(tmp_path / "drawn")
    make_pair(real, "train", "Basophil", "s1")
    for stem in ("s1", "s2"):
        make_pair(drawn, "train", "Basophil", stem)
    with pytest.raises(UserError, match="2 usable Basophil image/mask pairs, 3 asked to mix in"):
        mix_in_entries(drawn, {"Basophil": 3})
    with pytest.raises(UserError, match="dataset folder not found"):
        mix_in_entries(str(tmp_path / "nope"), {"Basophil": 1})
    with pytest.raises(UserError, match="has the class and stem of .*real.*s1.bmp"):
        WBCDataset().load_wbc(real, "train", extra=mix_in_entries(drawn, {"Basophil": 1}))
    with pytest.raises(UserError, match="0 usable Eosinophil.*Leave Eosinophil out"):
        mix_in_entries(drawn, {"Eosinophil": 1})
    # every chosen pair is read before training: broken, mismatched, without a cell
    with open(os.path.join(drawn, "train", "image", "Basophil", "s2.bmp"), "r+b") as f:
        f.truncate(20)
    assert len(mix_in_entries(drawn, {"Basophil": 1})) == 1      # s2 is not among those read
    with pytest.raises(UserError, match="s2.bmp"):
        mix_in_entries(drawn, {"Basophil": 2})
    make_pair(drawn, "train", "Monocyte", "small", mask=np.zeros((H - 3, W), np.uint8))
    with pytest.raises(UserError, match="small.png"):
        mix_in_entries(drawn, {"Monocyte": 1})
    make_pair(drawn, "train", "Lymphocyte", "empty", mask=np.zeros((H, W), np.uint8))
    with pytest.raises(UserError, match="empty.png: no cell in the mask"):
        mix_in_entries(drawn, {"Lymphocyte": 1})


def test_mixed_in_stems_equal_by_natural_order_sort_by_file_name_as_in_one_folder(tmp_path):
    make_pair(str(tmp_path / "real"), "train", "Basophil", "s01", img_ext=".png")
    make_pair(str(tmp_path / "drawn"), "train", "Basophil", "s1", img_ext=".bmp")
    mixed, copied, _ = mixed_and_copied(tmp_path, {"Basophil": 1})
    assert [i["stem"] for i in mixed.image_info] == [i["stem"] for i in copied.image_info] \
        == ["s1", "s01"]                                          # s1.bmp before s01.png


# ---------------------------------------------------------------- check

def test_check_dataset_reports_counts_and_problems(tmp_path):
    root = str(tmp_path / "WBC")
    make_pair(root, "train", "Neutrophil", "n1")
    two = disc((H, W), (10, 10), 6, value=128)
    disc((H, W), (28, 34), 7, value=128, out=two)
    make_pair(root, "train", "Neutrophil", "n2", mask=two)
    make_pair(root, "train", "Monocyte", "m1", shape=(60, 50))
    make_pair(root, "train", "Monocyte", "empty", mask=np.zeros((H, W), np.uint8))
    specks = np.zeros((H, W), np.uint8)
    specks[::4, ::4] = 9                                  # isolated stray pixels only
    make_pair(root, "train", "Monocyte", "specks", mask=specks)
    make_pair(root, "train", "Monocyte", "wrongsize", mask=np.zeros((H - 3, W), np.uint8))
    make_pair(root, "train", "Lymphocyte", "lisc", mask=disc((H - 8, W - 8), (16, 20), 8))
    _, bad = make_pair(root, "train", "Lymphocyte", "broken")
    open(bad, "wb").write(open(bad, "rb").read()[:60])
    make_pair(root, "val", "Neutrophil", "v1")
    report = check_dataset(root)
    assert report["usable"] is True
    train, val = report["subsets"]["train"], report["subsets"]["val"]
    assert train["images"] == {"Basophil": 0, "Eosinophil": 0, "Lymphocyte": 1, "Monocyte": 3,
                               "Neutrophil": 2}
    assert train["cells"] == {"Basophil": 0, "Eosinophil": 0, "Lymphocyte": 1, "Monocyte": 1,
                              "Neutrophil": 3}
    assert train["pairs"] == 8 and train["usable"] == 4
    assert train["min_size"] == [H, W] and train["max_size"] == [60, 50]
    assert val["images"]["Neutrophil"] == 1 and val["min_size"] == [H, W]
    probs = {}
    for p in report["problems"]:
        probs.setdefault(p["kind"], []).append(p)
    assert {os.path.basename(p["path"]) for p in probs["no_cell"]} == {"empty.png",
                                                                        "specks.png"}
    assert [os.path.basename(p["path"]) for p in probs["size_mismatch"]] == ["wrongsize.png"]
    assert [os.path.basename(p["path"]) for p in probs["unreadable"]] == ["broken.png"]
    assert len(probs["lisc_padding"]) == 1 and "1 masks" in probs["lisc_padding"][0]["message"]
    missing = {(p["subset"], cls) for p in probs["missing_class"] for cls in CLASS_NAMES
               if cls in p["message"]}
    assert missing == {("train", "Basophil"), ("train", "Eosinophil"), ("val", "Lymphocyte"),
                       ("val", "Monocyte")}
    assert report["errors"] == 2 and report["warnings"] == len(report["problems"]) - 2
    text = format_check_report(report)
    assert "usable" in text and "Neutrophil" in text and "2/3" in text
    assert "wrongsize.png" in text and "fix:" in text
    # nothing usable in train
    shutil.rmtree(os.path.join(root, "train"))
    report = check_dataset(root)
    assert report["usable"] is False and "NOT usable" in format_check_report(report)
    report = check_dataset(str(tmp_path / "absent"))
    assert report["usable"] is False and kinds(report["problems"]) == ["missing_folder"]


# ---------------------------------------------------------------- LISC import

LISC_COUNTS = {"Baso": 3, "eosi": 5, "lymp": 10, "mono": 4, "neut": 6}


def make_lisc(top):
    """A LISC-shaped archive: Main Dataset/<cls>/N.bmp, Ground Truth Segmentation/<cls>/
    areaforexpert1/N_expert.bmp (8 px smaller), a mixt folder and one image without mask."""
    main = os.path.join(top, "Main Dataset")
    truth = os.path.join(top, "Ground Truth Segmentation")
    n = 0
    for cls, count in LISC_COUNTS.items():
        for i in range(1, count + 1):
            n += 1
            save(os.path.join(main, cls, "{}.bmp".format(i)), smear(seed=n))
            mask = np.zeros((H - 8, W - 8, 3), np.uint8)
            mask[..., 0] = disc((H - 8, W - 8), (16, 20), 8, value=128)
            mask[1, 1] = (20, 0, 0)                           # a stray pixel
            save(os.path.join(truth, cls, "areaforexpert1", "{}_expert.bmp".format(i)), mask)
            save(os.path.join(truth, cls, "areaforexpert2", "{}_expert.bmp".format(i)),
                 np.zeros((H - 8, W - 8), np.uint8))
    save(os.path.join(main, "neut", "99.bmp"), smear(seed=99))         # no mask
    for i in (1, 2):
        save(os.path.join(main, "mixt", "{}.bmp".format(i)), smear(seed=100 + i))
    return top


def test_import_lisc(tmp_path, capsys):
    src = make_lisc(str(tmp_path / "LISC Database"))
    before = tree_hash(src)
    out = str(tmp_path / "WBC")
    report = import_lisc(src, out, val_fraction=0.2, seed=0, progress=True)
    assert "import-lisc" in capsys.readouterr().err                  # tqdm bar
    assert tree_hash(src) == before
    full = {"Baso": "Basophil", "eosi": "Eosinophil", "lymp": "Lymphocyte", "mono": "Monocyte",
            "neut": "Neutrophil"}
    expected_val = {"Basophil": 1, "Eosinophil": 1, "Lymphocyte": 2, "Monocyte": 1,
                    "Neutrophil": 1}
    for short, cls in full.items():
        n = LISC_COUNTS[short]
        assert report["counts"]["val"][cls] == expected_val[cls]
        assert report["counts"]["train"][cls] == n - expected_val[cls]
        for subset in ("train", "val"):
            imgs = sorted(os.listdir(os.path.join(out, subset, "image", cls)))
            masks = sorted(os.listdir(os.path.join(out, subset, "mask", cls)))
            assert len(imgs) == report["counts"][subset][cls]
            assert [m[:-4] for m in masks] == [i[:-4] for i in imgs]
            assert all(m.endswith(".png") for m in masks)
            for name in imgs:                                       # bytes unchanged
                with open(os.path.join(src, "Main Dataset", short, name), "rb") as a, \
                        open(os.path.join(out, subset, "image", cls, name), "rb") as b:
                    assert a.read() == b.read()
        train = set(os.listdir(os.path.join(out, "train", "image", cls)))
        val = set(os.listdir(os.path.join(out, "val", "image", cls)))
        assert not train & val
    assert report["written"] == 28 and report["already_present"] == 0
    assert report["mixt_images"] == 2
    assert [os.path.basename(p) for p in report["images_without_mask"]] == ["99.bmp"]
    text = format_import_report(report)
    assert "2 mixed-cell images" in text and "99.bmp" in text
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.startswith(".")]  # no temp
    # the imported dataset is usable and its masks are padded to the image size
    check = check_dataset(out)
    assert check["usable"] and check["errors"] == 0
    assert kinds(check["problems"]) == ["lisc_padding", "lisc_padding"]
    assert sum(check["subsets"]["train"]["cells"].values()) == 28 - 6
    ds = WBCDataset()
    ds.load_wbc(out, "val")
    ds.prepare()
    masks, ids = ds.load_mask(0)
    assert masks.shape == (H, W, 1) and masks[4:4 + H - 8, 4:4 + W - 8].sum() == masks.sum()
    # same split again: a no-op that touches nothing
    stamp = tree_hash(out)
    mtimes = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in stamp}
    again = import_lisc(src, out, val_fraction=0.2, seed=0, progress=False)
    assert again["written"] == 0 and again["already_present"] == 28
    assert again["counts"] == report["counts"]
    assert tree_hash(out) == stamp
    assert {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in stamp} == mtimes
    # an interrupted import (an image missing) is completed by running it again
    lost = os.path.join(out, "val", "image", "Monocyte",
                        os.listdir(os.path.join(out, "val", "image", "Monocyte"))[0])
    os.remove(lost)
    os.symlink(os.path.join(str(tmp_path), "nowhere.bmp"), lost)   # a broken link there
    with pytest.raises(UserError, match="broken symbolic link") as info:
        import_lisc(src, out, val_fraction=0.2, seed=0, progress=False)
    assert info.value.path == lost
    os.remove(lost)
    resumed = import_lisc(src, out, val_fraction=0.2, seed=0, progress=False)
    assert resumed["written"] == 1 and resumed["already_present"] == 27
    assert tree_hash(out) == stamp
    # another split into the same folder: refused, nothing written
    with pytest.raises(UserError, match="differ from this import"):
        import_lisc(src, out, val_fraction=0.5, seed=1, progress=False)
    assert tree_hash(out) == stamp
    # a changed output file: refused, not overwritten
    victim = os.path.join(out, "train", "image", "Lymphocyte",
                          sorted(os.listdir(os.path.join(out, "train", "image", "Lymphocyte")))[0])
    open(victim, "ab").write(b"x")
    stamp = tree_hash(out)
    with pytest.raises(UserError) as info:
        import_lisc(src, out, progress=False)
    assert os.path.basename(victim) in str(info.value)
    assert tree_hash(out) == stamp and tree_hash(src) == before


def test_import_lisc_split_is_seeded_and_stratified(tmp_path):
    src = make_lisc(str(tmp_path / "src"))
    a = import_lisc(src, str(tmp_path / "a"), val_fraction=0.3, seed=5, progress=False)
    import_lisc(src, str(tmp_path / "b"), val_fraction=0.3, seed=5, progress=False)
    assert tree_hash(str(tmp_path / "a")) == tree_hash(str(tmp_path / "b"))
    assert a["counts"]["val"] == {"Basophil": 1, "Eosinophil": 2, "Lymphocyte": 3,
                                  "Monocyte": 1, "Neutrophil": 2}
    splits = set()
    for seed in range(4):
        out = str(tmp_path / "s{}".format(seed))
        import_lisc(src, out, seed=seed, progress=False)
        splits.add(tuple(sorted(os.listdir(os.path.join(out, "val", "image", "Lymphocyte")))))
    assert len(splits) > 1
    none = import_lisc(src, str(tmp_path / "noval"), val_fraction=0, progress=False)
    assert sum(none["counts"]["val"].values()) == 0
    with pytest.raises(UserError, match="val_fraction"):
        import_lisc(src, str(tmp_path / "x"), val_fraction=1.0)


def test_import_lisc_tolerates_name_variants_and_wrapping_folder(tmp_path):
    top = tmp_path / "download"
    inner = top / "LISC Database"
    save(inner / "main_dataset" / "BASO" / "1.BMP", smear())
    save(inner / "Ground truth segmentation" / "Basophil" / "Area for expert 1" / "1_Expert.bmp",
         disc((H - 8, W - 8), (16, 20), 8))
    save(inner / "main_dataset" / "BASO" / "2.bmp", smear())            # two files, one
    save(inner / "main_dataset" / "BASO" / "2.BMP", smear(seed=3))      # number: ambiguous
    save(inner / "Ground truth segmentation" / "Basophil" / "Area for expert 1" / "2_Expert.bmp",
         disc((H - 8, W - 8), (16, 20), 8))
    report = import_lisc(str(top), str(tmp_path / "out"), progress=False)
    assert sorted(os.path.basename(p["path"]) for p in report["invalid"]) == ["2.BMP", "2.bmp"]
    assert [os.path.basename(p) for p in report["masks_without_image"]] == ["2_Expert.bmp"]
    assert report["counts"]["train"]["Basophil"] == 1
    assert os.path.isfile(tmp_path / "out" / "train" / "image" / "Basophil" / "1.bmp")
    assert os.path.isfile(tmp_path / "out" / "train" / "mask" / "Basophil" / "1.png")
    assert report["missing_classes"] == ["Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]


def test_import_lisc_bad_source_or_out(tmp_path):
    with pytest.raises(UserError, match="Main Dataset"):
        import_lisc(str(tmp_path / "absent"), str(tmp_path / "out"))
    os.makedirs(tmp_path / "src" / "Main Dataset" / "Baso")
    with pytest.raises(UserError, match="Ground Truth Segmentation"):
        import_lisc(str(tmp_path / "src"), str(tmp_path / "out"))
    src = make_lisc(str(tmp_path / "lisc"))
    before = tree_hash(src)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        import_lisc(src, str(tmp_path / "afile"), progress=False)
    with pytest.raises(UserError, match="inside the LISC source"):
        import_lisc(src, os.path.join(src, "WBC"), progress=False)
    assert tree_hash(src) == before and not os.path.exists(os.path.join(src, "WBC"))


# ---------------------------------------------------------------- real data

def test_real_data_one_cell_per_image_of_the_folder_class():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("real data not present: " + SHARED_DATA)
    for subset in ("train", "val"):
        ds = WBCDataset()
        ds.load_wbc(SHARED_DATA, subset)
        ds.prepare()
        assert ds.num_images > 0
        for i in ds.image_ids:
            info = ds.image_info[i]
            masks, ids = ds.load_mask(i)
            assert masks.shape[-1] == 1, info["mask_path"]
            assert ids.tolist() == [ds.class_names.index(info["class_name"])]
            assert info["class_name"] == os.path.basename(os.path.dirname(info["path"]))
            assert masks.shape[:2] == image_size(info["path"])
    report = check_dataset(SHARED_DATA)
    assert report["usable"] and report["errors"] == 0
    assert sum(report["subsets"]["train"]["cells"].values()) == \
        sum(report["subsets"]["train"]["images"].values())


# ---------------------------------------------------------------- properties

@settings(max_examples=400, deadline=None)
@given(h=st.integers(1, 14), w=st.integers(1, 14), density=st.floats(0, 1),
       seed=st.integers(0, 2 ** 32 - 1), min_area=st.one_of(st.none(), st.integers(1, 12)),
       offset=st.sampled_from([(0, 0), (8, 8), (0, 8), (1, 1), (-8, -8), (3, 0)]))
def test_property_mask_to_instances(h, w, density, seed, min_area, offset):
    rng = np.random.default_rng(seed)
    mask = (rng.random((h, w)) < density) * rng.integers(1, 256, (h, w))
    mask = mask.astype(np.uint8)
    shape = (h + offset[0], w + offset[1], 3)
    try:
        inst = mask_to_instances(mask, shape, min_area=min_area, path="m.png")
    except UserError as err:
        assert offset not in ((0, 0), (8, 8)) and "m.png" in str(err)
        return
    assert offset in ((0, 0), (8, 8))
    assert inst.dtype == bool and inst.shape[:2] == shape[:2]
    full = np.zeros(shape[:2], bool)
    m = offset[0] // 2
    full[m:m + h, m:m + w] = mask > 0
    limit = default_min_area(shape) if min_area is None else min_area
    expected = sorted(sorted(c) for c in components_bfs(full) if len(c) >= limit)
    got = sorted(sorted(map(tuple, np.argwhere(inst[..., k]))) for k in range(inst.shape[-1]))
    assert got == expected


_MODES = ["L", "RGB", "RGBA", "LA", "P", "1", "I;16"]


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(_MODES), fmt=st.sampled_from(["PNG", "BMP", "TIFF"]),
       h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2 ** 32 - 1),
       cut=st.one_of(st.none(), st.integers(0, 400)), junk=st.binary(max_size=64))
def test_property_read_image(tmp_path, mode, fmt, h, w, seed, cut, junk):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).convert(mode)
    path = str(tmp_path / "x.img")
    try:
        img.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        return                                    # the format cannot hold this mode
    data = open(path, "rb").read()
    if cut is not None:
        data = data[:cut] + junk
    with open(path, "wb") as f:
        f.write(data)
    for reader, ndim in ((read_image, 3), (read_mask, 2)):
        try:
            out = reader(path)
        except UserError as err:
            assert path in str(err) and cut is not None
            continue
        assert out.dtype == np.uint8 and out.ndim == ndim
        if cut is None:
            assert out.shape[:2] == (h, w)
            if reader is read_image and mode in ("L", "RGB"):
                np.testing.assert_array_equal(out, np.array(img.convert("RGB")))


_FOLDERS = ["Basophil", "baso", "NEUTROPHILS", "neut", "Lymp", "Monocyte", "eosi", "mixt",
            "Unknown"]
_file = st.tuples(st.sampled_from(_FOLDERS), st.sampled_from(["1", "2", "10", "a", "A", "b_c"]),
                  st.sampled_from([".png", ".bmp", ".JPG", ".jpeg", ".tif", ".TIFF", ".gif",
                                   ".txt", ""]))


@settings(max_examples=400, deadline=None)
@given(images=st.sets(_file, max_size=14), masks=st.sets(_file, max_size=14),
       hidden=st.booleans())
def test_property_scan_never_pairs_wrongly(images, masks, hidden):
    with tempfile.TemporaryDirectory() as top:
        for kind, files in (("image", images), ("mask", masks)):
            for folder, stem, ext in files:
                d = os.path.join(top, "train", kind, folder)
                os.makedirs(d, exist_ok=True)
                open(os.path.join(d, stem + ext), "wb").close()
                if hidden:
                    open(os.path.join(d, "." + stem + ext), "wb").close()
        os.makedirs(os.path.join(top, "train", "mask"), exist_ok=True)
        os.makedirs(os.path.join(top, "train", "image"), exist_ok=True)
        entries, problems = scan_dataset(top, "train")

    def index(files, exts):
        out = {}
        for folder, stem, ext in files:
            cls = match_class(folder)
            if cls and ext.lower() in exts:
                out.setdefault((cls, stem), []).append((folder, stem, ext))
        return out
    imgs = index(images, (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"))
    msks = index(masks, (".png", ".bmp", ".tif", ".tiff"))
    expected = {k for k in imgs if len(imgs[k]) == 1 and len(msks.get(k, [])) == 1}
    got = [(e["class_name"], e["stem"]) for e in entries]
    assert len(got) == len(set(got)) and set(got) == expected
    for e in entries:
        key = (e["class_name"], e["stem"])
        folder, stem, ext = imgs[key][0]
        assert e["image"] == os.path.join(top, "train", "image", folder, stem + ext)
        folder, stem, ext = msks[key][0]
        assert e["mask"] == os.path.join(top, "train", "mask", folder, stem + ext)
        assert e["class_id"] == CLASS_NAMES.index(e["class_name"]) + 1
    reported = {p["path"] for p in problems}
    for key, files in imgs.items():
        if key not in expected:                  # every skipped image is reported
            paths = {os.path.join(top, "train", "image", f, s + e) for f, s, e in files}
            paths |= {os.path.join(top, "train", "mask", f, s + e)
                      for f, s, e in msks.get(key, [])}
            assert paths & reported, key
    assert not any(os.path.basename(p).startswith(".") for p in reported)


_CELL_SPOTS = [(2, 2), (2, 16), (16, 2)]          # 6x6 cells: 36 px, above the 30 px minimum


@settings(max_examples=200, deadline=None)
@given(files=st.lists(st.tuples(st.sampled_from(_FOLDERS[:7]),
                                st.sampled_from(["1", "2", "10", "a", "A"]),
                                st.sampled_from([".png", ".bmp", ".tif"]),
                                st.sampled_from([".png", ".bmp", ".tif", None]),
                                st.integers(0, 3)), max_size=8))
def test_property_decoded_pairs_belong_together(files):
    """Each image is written in a colour of its own and its mask with a number of cells
    chosen per file: what WBCDataset decodes for a pair must be that image with the mask of
    the same class folder and stem (its cells, its class), and exactly the unambiguous pairs
    are loaded."""
    with tempfile.TemporaryDirectory() as top:
        colour_of, cells_of = {}, {}      # final content of every file written
        for k, (folder, stem, img_ext, mask_ext, cells) in enumerate(files):
            path = save(os.path.join(top, "train", "image", folder, stem + img_ext),
                        np.full((32, 32, 3), (10 + 7 * k, 200 - 5 * k, 99), np.uint8))
            colour_of[path] = (10 + 7 * k, 200 - 5 * k, 99)
            if mask_ext:
                mask = np.zeros((32, 32), np.uint8)
                for y, x in _CELL_SPOTS[:cells]:
                    mask[y:y + 6, x:x + 6] = 255
                cells_of[save(os.path.join(top, "train", "mask", folder, stem + mask_ext),
                              mask)] = cells

        def key(path):
            return (match_class(os.path.basename(os.path.dirname(path))),
                    os.path.splitext(os.path.basename(path))[0])
        images, masks = {}, {}
        for path in colour_of:
            images.setdefault(key(path), []).append(path)
        for path in cells_of:
            masks.setdefault(key(path), []).append(path)
        expected = {k for k, paths in images.items()
                    if len(paths) == 1 and len(masks.get(k, [])) == 1}
        ds = WBCDataset()
        try:
            ds.load_wbc(top, "train")
        except UserError as err:
            assert not expected and "train" in str(err)
            return
        ds.prepare()
        got = set()
        for i in ds.image_ids:
            info = ds.image_info[i]
            got.add((info["class_name"], info["stem"]))
            assert key(info["path"]) == key(info["mask_path"]) == (info["class_name"],
                                                                   info["stem"])
            assert (ds.load_image(i) == np.array(colour_of[info["path"]], np.uint8)).all()
            masks_i, ids = ds.load_mask(i)
            assert masks_i.shape == (32, 32, cells_of[info["mask_path"]])
            assert list(ids) == [ds.class_names.index(info["class_name"])] * masks_i.shape[-1]
        assert got == expected
