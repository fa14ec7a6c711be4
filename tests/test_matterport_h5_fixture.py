"""Tests of the synthetic Matterport weight-file fixture (tests/matterport_h5.py), checked against spec §4.1/§5/§6/§10."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import matterport_h5 as mh  # noqa: E402


def _counts(specs):
    n_tensors = sum(len(w) for _, w in specs)
    n_params = sum(int(np.prod(s)) for _, w in specs for _, s in w)
    n_stats = sum(int(np.prod(s)) for _, w in specs for n, s in w if "/moving_" in n)
    return len(specs), n_tensors, n_params, n_stats


def _names(attr):
    return [n.decode("utf8") for n in attr]


def _expected_names(only, backbone="resnet101", num_classes=81):
    weighted = {n for n, _ in mh.matterport_layer_specs(backbone, num_classes)}
    return [n for n in mh.all_layer_names(backbone, num_classes) if n not in weighted or n in only]


def _read_layer_names(group):
    if "layer_names" in group.attrs:
        return _names(group.attrs["layer_names"])
    names, i = [], 0
    while f"layer_names{i}" in group.attrs:
        names += _names(group.attrs[f"layer_names{i}"])
        i += 1
    return names


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    """One full resnet101/81 file (about 257 MB, about 2 s), shared by the module."""
    path = tmp_path_factory.mktemp("mp") / "mask_rcnn_coco_fake.h5"
    written = mh.write_matterport_h5(path, seed=3)
    yield path, written
    path.unlink()  # do not leave 257 MB behind in pytest's retained temp dirs


def test_counts_resnet101_coco():
    # spec §5: 233 top-level weighted layers, 690 tensors; §4.1/§10: 64,158,584 params, 111,488 non-trainable
    assert _counts(mh.matterport_layer_specs()) == (233, 690, 64_158_584, 111_488)


def test_counts_resnet50_wbc():
    # resnet50 drops 17 stage-4 identity blocks (res4g..w), 1,121,792 params each. NC 81 -> 6 removes 75 classes
    # from mrcnn_class_logits (1025 each), mrcnn_bbox_fc (4*1025) and mrcnn_mask (257).
    block = (1024 * 256 + 256 + 4 * 256) + (9 * 256 * 256 + 256 + 4 * 256) + (256 * 1024 + 1024 + 4 * 1024)
    params = 64_158_584 - 17 * block - 75 * (1025 + 4 * 1025 + 257)
    assert block == 1_121_792 and params == 44_684_470
    assert _counts(mh.matterport_layer_specs("resnet50", 6)) == (233 - 17 * 6, 690 - 17 * 18, params, 111_488 - 17 * 3072)
    assert _counts(mh.matterport_layer_specs("resnet50", 6))[:2] == (131, 384)


def test_layer_order_and_naming():
    names = [n for n, _ in mh.matterport_layer_specs()]
    assert names[:10] == ["conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2a", "res2a_branch2b", "bn2a_branch2b",
                          "res2a_branch2c", "bn2a_branch2c", "res2a_branch1", "bn2a_branch1"]
    assert [n for n in names if n.startswith("res4") and n.endswith("_branch2a")] == \
        [f"res4{chr(97 + i)}_branch2a" for i in range(23)]  # a + b..w
    assert names[208:] == [
        "fpn_c5p5", "fpn_c4p4", "fpn_c3p3", "fpn_c2p2", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "rpn_model",
        "mrcnn_class_conv1", "mrcnn_class_bn1", "mrcnn_class_conv2", "mrcnn_class_bn2", "mrcnn_class_logits",
        "mrcnn_bbox_fc", "mrcnn_mask_conv1", "mrcnn_mask_bn1", "mrcnn_mask_conv2", "mrcnn_mask_bn2",
        "mrcnn_mask_conv3", "mrcnn_mask_bn3", "mrcnn_mask_conv4", "mrcnn_mask_bn4", "mrcnn_mask_deconv", "mrcnn_mask"]
    all_names = mh.all_layer_names()
    assert len(set(all_names)) == len(all_names)
    for n in ("input_image", "zero_padding2d_1", "activation_1", "max_pooling2d_1", "res2a_out", "fpn_p5upsampled",
              "fpn_p4add", "fpn_p6", "anchors", "ROI", "roi_align_classifier", "pool_squeeze", "mrcnn_class",
              "mrcnn_bbox", "mrcnn_detection", "roi_align_mask"):
        assert n in all_names
    assert [n for n in all_names if n in set(names)] == names  # weightless names are interleaved, order kept


def test_spec_shapes():
    specs = dict(mh.matterport_layer_specs())
    shape = {w: s for ws in specs.values() for w, s in ws}
    assert shape["conv1/kernel:0"] == (7, 7, 3, 64)
    assert shape["mrcnn_bbox_fc/kernel:0"] == (1024, 324) and shape["mrcnn_bbox_fc/bias:0"] == (324,)
    assert shape["mrcnn_mask/kernel:0"] == (1, 1, 256, 81)
    assert shape["mrcnn_mask_deconv/kernel:0"] == (2, 2, 256, 256)
    assert [w for w, _ in specs["bn_conv1"]] == [f"bn_conv1/{x}:0" for x in mh.BN_WEIGHTS]
    assert specs["rpn_model"] == [
        ("rpn_conv_shared/kernel:0", (3, 3, 256, 512)), ("rpn_conv_shared/bias:0", (512,)),
        ("rpn_class_raw/kernel:0", (1, 1, 512, 6)), ("rpn_class_raw/bias:0", (6,)),
        ("rpn_bbox_pred/kernel:0", (1, 1, 512, 12)), ("rpn_bbox_pred/bias:0", (12,))]
    small = dict(mh.matterport_layer_specs("resnet50", 6, anchors_per_location=5, channels=4))
    assert small["conv1"][0][1] == (7, 7, 4, 64)
    assert small["rpn_model"][2][1] == (1, 1, 512, 10) and small["rpn_model"][4][1] == (1, 1, 512, 20)
    assert small["mrcnn_bbox_fc"][0][1] == (1024, 24)


def test_full_file_paths_shapes_and_values(coco_file):
    path, written = coco_file
    assert os.path.getsize(path) > 250_000_000  # spec §4.6: the real file is 257,557,808 bytes
    with h5py.File(path, "r") as f:
        assert _read_layer_names(f) == mh.all_layer_names()
        assert f.attrs["backend"] in ("tensorflow", b"tensorflow")  # vlen string: h5py >= 3 gives str
        assert f.attrs["keras_version"] in ("2.1.6", b"2.1.6")
        for p, s in [
            ("res2a_branch2a/res2a_branch2a/kernel:0", (1, 1, 64, 64)),
            ("res2a_branch2a/res2a_branch2a/bias:0", (64,)),
            ("bn2a_branch2a/bn2a_branch2a/gamma:0", (64,)),
            ("bn2a_branch2a/bn2a_branch2a/moving_variance:0", (64,)),
            ("mrcnn_class_conv1/mrcnn_class_conv1/kernel:0", (7, 7, 256, 1024)),
            ("mrcnn_mask_bn1/mrcnn_mask_bn1/moving_mean:0", (256,)),
            ("rpn_model/rpn_conv_shared/kernel:0", (3, 3, 256, 512)),
            ("rpn_model/rpn_class_raw/kernel:0", (1, 1, 512, 6)),
            ("rpn_model/rpn_bbox_pred/kernel:0", (1, 1, 512, 12)),
            ("mrcnn_bbox_fc/mrcnn_bbox_fc/kernel:0", (1024, 324)),
            ("mrcnn_mask/mrcnn_mask/kernel:0", (1, 1, 256, 81)),
            ("mrcnn_mask_deconv/mrcnn_mask_deconv/kernel:0", (2, 2, 256, 256)),
            ("conv1/conv1/kernel:0", (7, 7, 3, 64)),
        ]:
            assert f[p].shape == s and f[p].dtype == np.float32, p
        assert "rpn_model/rpn_model" not in f and "rpn_conv_shared" not in f

        # weight_names: fixed-length bytes, decodable under h5py >= 3; loading by group + weight_names works
        wn = f["mrcnn_class_conv1"].attrs["weight_names"]
        assert wn.dtype.kind == "S" and isinstance(wn[0], bytes)
        assert _names(wn) == ["mrcnn_class_conv1/kernel:0", "mrcnn_class_conv1/bias:0"]
        assert _names(f["rpn_model"].attrs["weight_names"])[0] == "rpn_conv_shared/kernel:0"
        n_tensors = 0
        for layer, ws in mh.matterport_layer_specs():
            g = f[layer]
            values = [g[n][()] for n in _names(g.attrs["weight_names"])]
            assert [v.shape for v in values] == [s for _, s in ws]
            for v, w in zip(values, written[layer]):
                np.testing.assert_array_equal(v, w)
            n_tensors += len(values)
        assert n_tensors == 690
        assert len(f["input_image"].attrs["weight_names"]) == 0 and len(f["input_image"]) == 0
        assert f["bn_conv1/bn_conv1/moving_variance:0"][()].min() > 0


def test_values_deterministic_and_distinct(tmp_path):
    only = ["conv1", "bn_conv1", "rpn_model", "mrcnn_mask"]
    a = mh.write_matterport_h5(tmp_path / "a.h5", "resnet50", 6, seed=1, only=only)
    b = mh.write_matterport_h5(tmp_path / "b.h5", "resnet50", 6, seed=1, only=only)
    c = mh.write_matterport_h5(tmp_path / "c.h5", "resnet50", 6, seed=2, only=only)
    assert list(a) == only
    for k in only:
        for x, y, z in zip(a[k], b[k], c[k]):
            assert x.dtype == np.float32
            np.testing.assert_array_equal(x, y)
            assert not np.array_equal(x, z)
    firsts = {float(v.flat[0]) for vs in a.values() for v in vs}
    assert len(firsts) == sum(len(vs) for vs in a.values())
    assert (a["bn_conv1"][3] > 0).all()


def test_chunked_layer_names_round_trip(tmp_path):
    only = ["conv1", "mrcnn_bbox_fc"]
    mh.write_matterport_h5(tmp_path / "plain.h5", only=only)
    mh.write_matterport_h5(tmp_path / "chunk.h5", only=only, chunk_layer_names=True)
    with h5py.File(tmp_path / "plain.h5", "r") as p, h5py.File(tmp_path / "chunk.h5", "r") as c:
        assert "layer_names" not in c.attrs and "layer_names0" in c.attrs
        n_chunks = sum(1 for k in c.attrs if k.startswith("layer_names"))
        expected = _expected_names(only)
        assert n_chunks == -(-len(expected) // 100) and n_chunks > 1
        assert len(c.attrs["layer_names0"]) == 100 and c.attrs["layer_names0"].dtype.kind == "S"
        assert _read_layer_names(c) == _read_layer_names(p) == expected
        assert all(n in c for n in expected)
        np.testing.assert_array_equal(c["conv1/conv1/kernel:0"][()], p["conv1/conv1/kernel:0"][()])


def test_without_weightless_layers(tmp_path):
    mh.write_matterport_h5(tmp_path / "w.h5", "resnet50", 6, weightless_layers=False, only=["conv1"],
                           keras_version=b"2.2.4")
    assert mh.all_layer_names("resnet50", 6, weightless_layers=False) == \
        [n for n, _ in mh.matterport_layer_specs("resnet50", 6)]
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert _read_layer_names(f) == list(f.keys()) == ["conv1"]
        assert f.attrs["keras_version"] in ("2.2.4", b"2.2.4")


def test_full_model_layout(tmp_path):
    written = mh.write_full_model_h5(tmp_path / "full.h5", only=["rpn_model", "mrcnn_class_logits"])
    with h5py.File(tmp_path / "full.h5", "r") as f:
        assert "layer_names" not in f.attrs and "model_weights" in f
        assert "keras_version" in f.attrs and "model_config" in f.attrs
        g = f["model_weights"]
        assert _read_layer_names(g) == _expected_names({"rpn_model", "mrcnn_class_logits"})
        np.testing.assert_array_equal(g["rpn_model/rpn_bbox_pred/bias:0"][()], written["rpn_model"][5])
        assert g["mrcnn_class_logits/mrcnn_class_logits/kernel:0"].shape == (1024, 81)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        mh.matterport_layer_specs("resnet152")
    with pytest.raises(ValueError):
        mh.write_matterport_h5(tmp_path / "x.h5", only=["mrcnn_bbox"])  # weightless


def test_no_tensorflow_import():
    code = "import sys, matterport_h5; sys.exit(bool({'tensorflow', 'keras'} & set(sys.modules)))"
    subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__), check=True)
