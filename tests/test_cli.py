"""WBC.py run as a user would on tiny synthetic data: each command's first run of a flow as
a subprocess, as a user runs it; reruns and error cases in this process (`here`), which
saves a Python and TensorFlow start-up (about 9 s on a slow CPU) per call."""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest
from PIL import Image

import WBC as wbc_module
from conftest import ROOT, SHARED_DATA, cli
from matterport_h5 import write_matterport_h5

WBC = os.path.join(ROOT, "WBC.py")


def run(*args, cwd=None, timeout=600, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, WBC] + list(args), capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def here(*args):
    """`python3 WBC.py ARGS` in this process, with `run`'s result attributes."""
    code, out, err = cli(*args)
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    result = run("synth", f"--out={out}", "--images=12", "--size=128", "--seed=3")
    assert result.returncode == 0, result.stderr
    return out


def test_help_of_every_command_has_an_example():
    for command in ["train", "evaluate", "detect", "predict", "check", "import-lisc", "synth",
                    "demo"]:
        result = here(command, "--help")
        assert result.returncode == 0 and "example:" in result.stdout, command


def test_check_reports_a_usable_dataset(synth_data):
    result = run("check", f"--dataset={synth_data}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Neutrophil" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    image = tmp_path / "cell.png"
    Image.new("RGB", (64, 48)).save(image)
    check = here("check", f"--dataset={tmp_path / 'missing'}")
    assert check.returncode == 2 and "dataset folder not found" in check.stdout
    cases = [
        ("train", f"--dataset={tmp_path / 'missing'}", "--weights=none"),
        ("detect", "--image=" + str(tmp_path / "nope.png")),
        ("detect",),
        ("train", f"--dataset={tmp_path}", "--time-limit=soon"),
        ("evaluate", f"--dataset={tmp_path}", "--results=r.json", "--tta"),
        ("evaluate", f"--dataset={tmp_path}", "--results=r.json", "--per-class"),
        ("evaluate", f"--dataset={tmp_path}", "--weights=a.h5,"),
        ("detect", f"--image={image}", "--weights=none,last"),
        ("detect", f"--image={image}", "--weights=last,missing.h5"),
    ]
    for args in cases:
        result = here(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, args
        errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert len(errors) == 1, (args, result.stderr)
    assert here("frobnicate").returncode == 2


def test_bad_weight_files_are_one_line_errors(tmp_path, synth_data, monkeypatch):
    truncated = tmp_path / "mask_rcnn_coco.h5"
    truncated.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    other = tmp_path / "other.h5"
    write_matterport_h5(str(other), backbone="resnet50", num_classes=81,
                        only=["mrcnn_class_logits"])
    cases = [(f"--weights={tmp_path / 'missing.h5'}", "file not found"),
             (f"--weights={truncated}", "not a readable HDF5"),
             (f"--weights={other}", "exclude=")]
    for weights, message in cases:
        result = here("train", f"--dataset={synth_data}", weights, "--image-size=128",
                      f"--logs={tmp_path / 'logs'}")
        assert result.returncode == 2, (weights, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and message in result.stderr, result.stderr
    monkeypatch.setattr(wbc_module, "COCO_WEIGHTS_PATH", str(truncated))   # WBC_COCO_WEIGHTS
    result = here("train", f"--dataset={synth_data}", "--weights=coco", "--image-size=128")
    assert result.returncode == 2 and "truncated download" in result.stderr


def test_train_from_matterport_coco_weights(tmp_path, synth_data):
    coco = tmp_path / "mask_rcnn_coco.h5"
    written = write_matterport_h5(str(coco), backbone="resnet50", num_classes=81, seed=4)
    result = run("train", f"--dataset={synth_data}", "--weights=coco", "--image-size=128",
                 "--epochs=1", "--steps-per-epoch=1", "--validation-steps=1",
                 f"--logs={tmp_path / 'logs'}", "--augment=none",
                 env={"WBC_COCO_WEIGHTS": str(coco)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COCO" in result.stdout and "Training layers 3+" in result.stdout
    (saved,) = (tmp_path / "logs").glob("wbc*/config.json")
    saved = json.loads(saved.read_text())
    assert (saved["BACKBONE"], saved["LEARNING_RATE"]) == ("resnet50", 0.001)
    (checkpoint,) = (tmp_path / "logs").glob("wbc*/mask_rcnn_wbc_0001.h5")
    with h5py.File(checkpoint, "r") as f:       # the frozen stem still holds COCO's values
        np.testing.assert_array_equal(f["conv1/conv1/kernel:0"][()], written["conv1"][0])


def test_demo_draws_trains_a_small_model_evaluates_and_detects(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", f"--out={out}", "--minutes=0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = (out / "logs").glob("wbc*/config.json")
    saved = json.loads(saved.read_text())
    assert (saved["BACKBONE"], saved["IMAGE_MAX_DIM"], saved["LEARNING_RATE"]) == ("small", 256,
                                                                                   0.01)
    assert list((out / "data" / "train" / "image").glob("*/*"))
    assert (out / "evaluate" / "report.md").is_file()
    assert len(list((out / "detect").glob("*_overlay.png"))) == 6
    with open(out / "detect" / "counts.csv") as f:
        assert len({row["image"] for row in csv.DictReader(f)}) == 6
    assert "Demo finished in" in result.stdout


def test_time_limit_and_sigterm_save_a_checkpoint_and_say_how_to_resume(tmp_path, synth_data):
    common = [f"--dataset={synth_data}", "--image-size=128", "--epochs=50",
              "--steps-per-epoch=1000", "--validation-steps=1", "--augment=none"]
    # one of the data set's own pairs again, under another stem, mixed in from another folder
    image = sorted((synth_data / "train" / "image").glob("*/*"))[0]
    cls = image.parent.name
    mask = next((synth_data / "train" / "mask" / cls).glob(image.stem + ".*"))
    for kind, path in (("image", image), ("mask", mask)):
        (tmp_path / "more" / "train" / kind / cls).mkdir(parents=True)
        shutil.copy(path, tmp_path / "more" / "train" / kind / cls / ("more" + path.suffix))
    mix = f"--mix-in={tmp_path / 'more'}:{cls}=1"
    result = run("train", *common, "--weights=none", "--time-limit=1s",
                 f"--logs={tmp_path / 'a'}", mix)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Mixed into train: 1 {cls} (more) of {tmp_path / 'more' / 'train'}" in result.stdout
    own = len(list((synth_data / "train" / "image").glob("*/*")))
    assert f"Training set: {own + 1} images, 1 of them mixed in" in result.stdout
    assert "Time limit reached" in result.stdout and "--weights=last" in result.stdout
    assert mix in result.stdout.split("Resume with:")[1]
    (run_dir,) = (tmp_path / "a").glob("wbc*")
    assert (run_dir / "mask_rcnn_wbc_0001.h5").is_file()
    assert (json.loads((run_dir / "config.json").read_text())["MIX_IN"]
            == [f"{os.path.realpath(tmp_path / 'more')}:{cls}=1"])

    # Continued without the flag, the run warns that it trains on other images; SIGTERM saves.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, WBC, "train", *common, "--weights=last",
                             f"--logs={tmp_path / 'a'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    before = []
    for line in proc.stdout:
        before.append(line)
        if line.startswith("Checkpoints go to"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    out = "".join(before) + out
    assert proc.returncode == 143, out + err
    assert (f"was trained with {mix}; this command gives no --mix-in, so it trains on other "
            f"images. To train on the same, give {mix}") in out
    assert "Interrupted (SIGTERM)" in out and "Resume with" in out
    assert (run_dir / "mask_rcnn_wbc_0002.h5").is_file()


def test_mix_in_record_is_the_same_for_flags_that_add_the_same_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def record(*texts):
        return wbc_module.mix_in_record([wbc_module.mix_in_flag(t) for t in texts])
    same = record(f"{tmp_path / 'cells'}:Basophil=20,Eosinophil=3", f"{tmp_path / 'more'}:neut=1")
    assert record("more:Neutrophils=1", "./cells:eosi=03,baso=20") == same
    real = os.path.realpath(tmp_path)
    assert same == [f"{os.path.join(real, 'cells')}:Basophil=20,Eosinophil=3",
                    f"{os.path.join(real, 'more')}:Neutrophil=1"]
    assert record("cells:Basophil=20") != record("cells:Basophil=10")
    assert record() == []


def test_mix_in_record_resolves_links_as_the_given_twice_check_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cells").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "cells")
    real = os.path.realpath(tmp_path / "cells")

    def record(text):
        return wbc_module.mix_in_record([wbc_module.mix_in_flag(text)])
    assert record("link:Basophil=20") == record("cells:Basophil=20") == [f"{real}:Basophil=20"]
    # A checkpoint saved before links were resolved recorded the link itself: no warning
    # when the run is continued through the folder, one when the counts differ.
    through_link = [f"{tmp_path / 'link'}:Basophil=20"]
    assert wbc_module.mix_in_change(through_link, record("cells:Basophil=20")) is None
    assert wbc_module.mix_in_change(through_link, record("cells:Basophil=10")) is not None
    # Resolving links can change the records' order: "link" sorts before "more", "cells" after.
    (tmp_path / "more").mkdir()
    both = [f"{tmp_path / 'link'}:Basophil=20", f"{tmp_path / 'more'}:Basophil=1"]
    given = wbc_module.mix_in_record([wbc_module.mix_in_flag(t) for t in
                                      ("more:Basophil=1", "cells:Basophil=20")])
    assert wbc_module.mix_in_change(both, given) is None


def test_mix_in_change_warns_only_when_a_recorded_run_gets_other_flags():
    assert wbc_module.mix_in_change(None, ["/c:Basophil=20"]) is None    # not recorded
    assert wbc_module.mix_in_change(["/c:Basophil=20"], ["/c:Basophil=20"]) is None
    assert wbc_module.mix_in_change([], []) is None
    added = wbc_module.mix_in_change([], ["/my cells:Basophil=20"])
    assert "trained with no --mix-in; this command gives --mix-in='/my cells:Basophil=20'" in added
    assert added.endswith("To train on the same, leave out --mix-in")
    changed = wbc_module.mix_in_change(["/a:Basophil=20"], ["/a:Basophil=10"])
    assert ("trained with --mix-in=/a:Basophil=20; this command gives --mix-in=/a:Basophil=10"
            in changed)
    assert changed.endswith("To train on the same, give --mix-in=/a:Basophil=20")


def test_mix_in_flag_reads_folders_with_colons_and_names_classes_as_folders_do():
    mix = wbc_module.mix_in_flag(r"C:\cells\WBC-cells:Basophil=20,eosi=3")
    assert mix.folder == r"C:\cells\WBC-cells"
    assert mix.counts == {"Basophil": 20, "Eosinophil": 3}
    for bad in (r"C:\cells\WBC-cells", "WBC-cells:Basophil", "WBC-cells:Basophil=\u00b2",
                "WBC-cells:Basophil=-2", ":Basophil=2"):
        with pytest.raises(argparse.ArgumentTypeError):
            wbc_module.mix_in_flag(bad)


def test_time_budget_fits_the_epochs_and_ends_the_cosine_there(tmp_path, synth_data,
                                                              monkeypatch):
    """--time-budget=10m, with epochs that take 100 s on a stand-in clock: after epoch 1, 500 s
    are left, 4 more epochs with 10% to spare, so the run ends after epoch 5 of the 50 asked
    for, and the compiled step's rate follows a cosine that reaches 0 there."""
    class SlowEpochs(wbc_module.TimeBudget):
        def __init__(self, model, deadline, most):
            ticks = iter(range(1000))
            super().__init__(model, deadline, most,
                             clock=lambda: deadline - 600 + 100 * next(ticks))
    monkeypatch.setattr(wbc_module, "TimeBudget", SlowEpochs)
    result = here("train", f"--dataset={synth_data}", "--weights=none", "--image-size=128",
                  "--epochs=50", "--steps-per-epoch=2", "--validation-steps=1", "--warmup=0",
                  "--lr=0.01", "--augment=none", "--time-budget=10m", f"--logs={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "to 50 or fewer, to fit --time-budget=10m" in result.stdout
    assert "Time budget: 8.3 min left, about 100 s per epoch: the run ends after epoch 5, " \
           "where the learning rate's cosine reaches 0" in result.stdout
    run_dir, = tmp_path.glob("wbc*")
    assert sorted(p.name for p in run_dir.glob("*.h5"))[-1] == "mask_rcnn_wbc_0005.h5"
    with open(run_dir / "losses.csv") as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    # epoch 1 ran on the 50-epoch cosine (100 steps); from epoch 2 on, 10 steps
    expected = [0.005 * (1 + np.cos(np.pi * 2 / 100))] + [
        0.005 * (1 + np.cos(np.pi * 2 * e / 10)) for e in range(2, 6)]
    assert rates == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_time_budget_says_when_epochs_not_the_budget_end_the_run(capsys):
    """With time for more epochs than --epochs, the plan says so and which --epochs uses the
    budget (a user's 2-hour budget would otherwise end at the default 75 epochs unsaid)."""
    class Run:
        epoch = 0
        config = types.SimpleNamespace(LEARNING_RATE_SCHEDULE="cosine")

        def set_last_epoch(self, last):
            self.last_epoch = last

    def first_epoch(most):
        """The plan after one epoch of 100 s, with 600 s of budget at the start."""
        run, ticks = Run(), iter(range(0, 1000, 100))
        run.last_epoch = most
        budget = wbc_module.TimeBudget(run, deadline=600, most=most, clock=lambda: next(ticks))
        budget.on_train_begin()
        run.epoch = 1
        budget.on_epoch_end(0)
        return run.last_epoch, capsys.readouterr().out
    last, said = first_epoch(most=3)
    assert last == 3
    assert ("Time budget: 8.3 min left, about 100 s per epoch: the run ends after epoch 3, "
            "where the learning rate's cosine reaches 0. --epochs=3 ends it before the budget, "
            "which has time until epoch 5: give --epochs=5 or more to use it") in said
    last, said = first_epoch(most=50)      # the budget ends the run: no such words
    assert last == 5 and "--epochs" not in said


def test_two_runs_started_together_in_one_logs_folder_get_a_folder_each(tmp_path, synth_data):
    logs = tmp_path / "logs"
    args = [sys.executable, WBC, "train", f"--dataset={synth_data}", "--weights=none",
            "--image-size=128", "--epochs=1", "--steps-per-epoch=2", "--validation-steps=1",
            "--augment=none", f"--logs={logs}", "--threads=1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen(args + [f"--seed={seed}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL) for seed in (1, 2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = sorted(logs.iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert sorted(p.name for p in run_dir.glob("*.h5")) == ["mask_rcnn_wbc_0001.h5"]
        assert json.loads((run_dir / "config.json").read_text())["STEPS_PER_EPOCH"] == 2


def test_import_lisc_then_check(tmp_path):
    from test_dataset import make_lisc
    source = tmp_path / "LISC"
    make_lisc(source)
    out = tmp_path / "WBC"
    result = run("import-lisc", f"--source={source}", f"--out={out}", "--seed=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "train" / "image").is_dir() and (out / "val" / "mask").is_dir()
    assert "mixt" in result.stdout
    assert run("import-lisc", f"--source={tmp_path / 'nope'}", f"--out={out}").returncode == 2


def test_synth_single_cells(tmp_path):
    result = run("synth", f"--out={tmp_path / 'cells'}", "--images=5", "--size=96",
                 "--single-cells")
    assert result.returncode == 0, result.stderr
    masks = sorted((tmp_path / "cells").glob("*/mask/*/*.png"))
    assert len(masks) == 5
    sides = {Image.open(m).size for m in masks}
    assert all(w == h for w, h in sides) and len(sides) > 1      # crops, not 96 x 96 smears


def test_train_resume_detect_evaluate(tmp_path, synth_data):
    logs = tmp_path / "logs"
    common = [f"--dataset={synth_data}", f"--logs={logs}", "--image-size=128",
              "--steps-per-epoch=2", "--validation-steps=1", "--seed=0", "--augment=none"]
    first = run("train", "--weights=none", "--epochs=1", "--color-norm=per-image",
                "--mask-rois=3", *common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Checkpoints go to" in first.stdout
    (run_dir,) = [d for d in logs.iterdir() if d.name.startswith("wbc")]
    assert (run_dir / "mask_rcnn_wbc_0001.h5").is_file()
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["IMAGE_MAX_DIM"], saved["COLOR_NORMALIZATION"]) == (128, "per-image")
    assert saved["MASK_ROIS_PER_IMAGE"] == 3
    # --weights=none trains with the from-scratch recipe (WBCConfig + SCRATCH_RECIPE)
    recipe = (saved["BACKBONE"], saved["LEARNING_RATE"], saved["TRAIN_BN"])
    assert recipe == ("small", 0.0025, False)
    assert saved["LOSS_WEIGHTS"]["mrcnn_class_loss"] == 3 and saved["TRAIN_ROIS_PER_IMAGE"] == 32
    # resumed without the flags: steps per epoch and augmentation are the run's own
    second = run("train", "--weights=last", "--epochs=2", f"--dataset={synth_data}",
                 f"--logs={logs}", "--image-size=128", "--seed=0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (run_dir / "mask_rcnn_wbc_0002.h5").is_file()
    assert "Training layers all" in second.stdout and "from epoch 1 to 2" in second.stdout
    assert "2 steps per epoch" in second.stdout
    resumed = json.loads((run_dir / "config.json").read_text())
    assert (resumed["VALIDATION_STEPS"], resumed["AUGMENTATION"]) == (1, "none")
    assert resumed["MASK_ROIS_PER_IMAGE"] == 3
    assert len(list(logs.iterdir())) == 1                     # continued in the same run
    finetune = tmp_path / "finetune"
    before = sorted(p.name for p in run_dir.iterdir())
    fresh = run("train", f"--weights={run_dir / 'mask_rcnn_wbc_0002.h5'}", "--new-run",
                "--epochs=1", *common, f"--logs={finetune}")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "from epoch 0 to 1" in fresh.stdout
    (fresh_dir,) = finetune.iterdir()                          # a new run, at epoch 1
    assert [p.name for p in fresh_dir.glob("*.h5")] == ["mask_rcnn_wbc_0001.h5"]
    fresh_config = json.loads((fresh_dir / "config.json").read_text())
    assert (fresh_config["BACKBONE"], fresh_config["LEARNING_RATE"]) == ("small", 0.001)
    assert sorted(p.name for p in run_dir.iterdir()) == before     # the source run untouched
    refused = here("train", "--weights=none", "--new-run", *common)
    assert refused.returncode == 2 and "--new-run" in refused.stderr, refused.stderr

    images = synth_data / "val" / "image"
    folder = next(d for d in images.iterdir() if any(d.iterdir()))
    out = tmp_path / "detect"
    args = ("detect", f"--images={folder}", f"--logs={logs}", f"--out={out}",
            "--min-confidence=0")
    result = run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    stems = [p.stem for p in folder.iterdir()]
    for stem in stems:
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.size == Image.open(folder / f"{stem}.png").size
        assert (out / f"{stem}_labels.png").is_file()
    results = json.loads((out / "detections.json").read_text())
    assert all({"image_id", "category_id", "score", "segmentation", "bbox"} <= set(r)
               for r in results)
    with open(out / "counts.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(stems) and "Neutrophil %" in rows[0]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*_overlay.png")}
    again = here(*args)
    assert again.returncode == 0 and "already done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*_overlay.png")} == before
    another = next(p for d in images.iterdir() if d != folder for p in d.iterdir())
    other = here("detect", f"--image={another}", f"--out={out}",     # other weights, same --out
                 f"--weights={run_dir / 'mask_rcnn_wbc_0001.h5'}")
    assert other.returncode == 2 and "holds detections made with" in other.stderr, other.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*_overlay.png")} == before
    # Another file of a done image's name is an error, not "done"; images added later are
    # listed in the folder's counts.csv with the earlier ones.
    grown, day2 = tmp_path / "grown", tmp_path / "day2"
    shutil.copytree(out, grown)
    day2.mkdir()
    done = next(folder.iterdir())
    shutil.copy(done, day2 / done.name)
    clash = here("detect", f"--images={day2}", f"--logs={logs}", f"--out={grown}",
                 "--min-confidence=0")
    assert clash.returncode == 2 and "holds the results of" in clash.stderr, clash.stderr
    (day2 / done.name).rename(day2 / f"new_{done.name}")
    added = here("detect", f"--images={day2}", f"--logs={logs}", f"--out={grown}",
                 "--min-confidence=0")
    assert added.returncode == 0, added.stdout + added.stderr
    assert f"{len(stems) + 1} images, {len(stems)} of them from earlier runs" in added.stdout
    with open(grown / "counts.csv") as f:
        listed = [row["image"] for row in csv.DictReader(f)]
    assert sorted(listed) == sorted([p.name for p in folder.iterdir()] + [f"new_{done.name}"])
    # A checkpoint copied away from its run folder (no config.json beside it) still detects
    # with its run's settings, which the file carries (the defaults, a resnet50 backbone,
    # cannot load the small backbone's weights).
    moved = tmp_path / "moved" / "model.h5"
    moved.parent.mkdir()
    moved.write_bytes((run_dir / "mask_rcnn_wbc_0002.h5").read_bytes())
    alone = here("detect", f"--image={another}", f"--out={tmp_path / 'moved_out'}",
                 f"--weights={moved}")
    assert alone.returncode == 0, alone.stdout + alone.stderr

    report = tmp_path / "eval"
    result = run("evaluate", f"--dataset={synth_data}", f"--logs={logs}", f"--out={report}")
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["subset"] == "val"
    classes = {d.name for d in images.iterdir()}        # images named with their class folder
    assert all(im["file_name"].split("/")[0] in classes for im in metrics["per_image"])
    for name in ["report.md", "confusion.png", "pr_curves.png", "worst.png"]:
        assert (report / name).is_file(), name
    again = here("evaluate", f"--dataset={synth_data}", f"--results={report / 'detections.json'}",
                 f"--out={tmp_path / 'again'}",                       # the report's detections
                 f"--min-confidence={metrics['thresholds']['min_confidence']}")
    assert again.returncode == 0, again.stdout + again.stderr
    rescored_metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    for key in ("coco", "detection", "confusion", "per_class"):
        assert rescored_metrics[key] == metrics[key], key
    rescored = here("evaluate", f"--dataset={synth_data}", f"--results={out / 'detections.json'}",
                    f"--out={tmp_path / 'rescored'}")
    assert rescored.returncode == 0, rescored.stdout + rescored.stderr

    image = next(folder.iterdir())
    tta = here("detect", f"--image={image}", f"--logs={logs}", f"--out={tmp_path / 'tta'}",
               "--min-confidence=0", "--tta")
    assert tta.returncode == 0, tta.stdout + tta.stderr
    assert "8 views" in tta.stdout and (tmp_path / "tta" / f"{image.stem}_overlay.png").is_file()
    tta_eval = here("evaluate", f"--dataset={synth_data}", f"--logs={logs}", "--tta",
                    f"--out={tmp_path / 'tta_eval'}")
    assert tta_eval.returncode == 0, tta_eval.stdout + tta_eval.stderr
    tta_meta = json.loads((tmp_path / "tta_eval" / "metrics.json").read_text())["meta"]
    assert tta_meta["tta"] and tta_meta["max_detections"] == wbc_module.EVAL_MAX_DETECTIONS
    # One detection per (region, class) against one per region (the layer's own test checks
    # the candidates): the models are built as asked, the reports say which, and the
    # detections at the threshold (0.7; above 0.5 only one class can pass) are the same.
    by_flag = {}
    for flag in ("--per-class", "--no-per-class"):
        folder = tmp_path / f"eval{flag}"
        result = here("evaluate", f"--dataset={synth_data}", f"--logs={logs}", flag,
                      f"--out={folder}")
        assert result.returncode == 0, result.stdout + result.stderr
        by_flag[flag] = json.loads((folder / "metrics.json").read_text())
    every, top = by_flag["--per-class"], by_flag["--no-per-class"]
    assert (every["meta"]["per_class"], top["meta"]["per_class"]) == (True, False)
    assert "one per (region, class)" in (tmp_path / "eval--per-class" / "report.md").read_text()
    assert "one per region, of its" in (tmp_path / "eval--no-per-class" / "report.md").read_text()
    for key in ("detection", "confusion", "segmentation"):
        assert every[key] == top[key], key
    # Down to the score floor a region gives up to one detection per class: AP ranks up to
    # COCO's 100 per image, not the run's own cap (20), which detect keeps.
    cap = wbc_module.EVAL_MAX_DETECTIONS
    run_cap = json.loads((run_dir / "config.json").read_text())["DETECTION_MAX_INSTANCES"]
    assert every["meta"]["max_detections"] == cap > run_cap
    assert f"At most {cap} per image." in (tmp_path / "eval--per-class" / "report.md").read_text()
    plain, _ = wbc_module.inference_model(str(run_dir / "mask_rcnn_wbc_0002.h5"), str(logs))
    assert plain.config.DETECTION_MAX_INSTANCES == run_cap
    checkpoints = [run_dir / f"mask_rcnn_wbc_000{epoch}.h5" for epoch in (1, 2)]
    ensemble = here("evaluate", f"--dataset={synth_data}",
                    "--weights=" + ",".join(map(str, checkpoints)))
    assert ensemble.returncode == 0, ensemble.stdout + ensemble.stderr
    assert "ensemble of 2 models" in ensemble.stdout
    (report,) = run_dir.glob("mask_rcnn_wbc_0001_ensemble2-*_eval_val")
    meta = json.loads((report / "metrics.json").read_text())["meta"]
    assert meta["ensemble"] == 2 and str(checkpoints[1]) in meta["model"]
    assert meta["max_detections"] == cap
    assert f"At most {cap} per image (per model and view" in (report / "report.md").read_text()
    twice = here("evaluate", f"--dataset={synth_data}", f"--logs={logs}",     # same file
                 f"--weights=last,{run_dir}/./{checkpoints[1].name}")
    assert twice.returncode == 2 and "given twice" in twice.stderr, twice.stdout + twice.stderr


def test_a_report_of_another_data_set_is_never_replaced(tmp_path):
    import WBC
    first, second = tmp_path / "A" / "WBC", tmp_path / "B" / "WBC"     # same folder name
    folder = tmp_path / "mask_rcnn_wbc_0005_eval_val"
    assert WBC.unused_report_folder(str(folder), str(first)) == str(folder)    # free
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"dataset": str(first)}))
    assert WBC.unused_report_folder(str(folder), str(first)) == str(folder)    # same data: rewrite
    by_name = WBC.unused_report_folder(str(folder), str(second))
    assert by_name == f"{folder}-WBC"
    os.makedirs(by_name)
    with open(os.path.join(by_name, "metrics.json"), "w") as f:
        json.dump({"dataset": str(tmp_path / "C" / "WBC")}, f)
    by_hash = WBC.unused_report_folder(str(folder), str(second))
    assert by_hash.startswith(f"{folder}-WBC-") and by_hash != by_name


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared real data not present")
def test_check_accepts_the_real_data():
    result = run("check", f"--dataset={SHARED_DATA}")
    assert result.returncode == 0, result.stdout
