"""Faults during `train` and `detect`, as a user would meet them: kill -9 at random moments,
a full disk while saving, a killed `detect --images` run rerun into the same --out.

The kill -9 trials run a real `WBC.py train` (small backbone, 128 px, one step per epoch, so
an epoch and its checkpoint come every second or so once TensorFlow is up) and SIGKILL it
at a random moment, while a checkpoint is being written, or just after one appeared. After
every kill, every file of the run folder must open, `find_last` must name the newest
complete checkpoint, and the next `--weights=last` run must start from that checkpoint at
its epoch with the run's learning rate, after removing the killed writer's temporary files.
That next run is the next trial's victim. The default suite runs 3 trials, `-m slow` 12
from a fresh start.
"""
import csv
import errno
import hashlib
import json
import os
import random
import shutil
import time

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from faults import CHECKPOINT, Child, check_run_folder, kill_leftovers, wait_until
from wbc.errors import UserError

LR = 0.002
TINY = ["--image-size=128", "--steps-per-epoch=1", "--validation-steps=1", "--augment=none"]


def train_args(data, logs, weights, epochs=1000, seed=0):
    # A constant rate, so every losses.csv row can be checked against LR (a resume keeps it).
    fresh = (["--backbone=small", f"--lr={LR}", "--lr-schedule=constant", "--warmup=0"]
             if weights == "none" else [])
    return ["train", f"--dataset={data}", f"--logs={logs}", f"--weights={weights}",
            f"--epochs={epochs}", f"--seed={seed}"] + TINY + fresh


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_dirs(logs):
    return sorted(os.path.join(logs, d) for d in os.listdir(logs)) if os.path.isdir(logs) else []


@pytest.fixture(autouse=True)
def no_orphans():
    """A failing test must not leave a training process running."""
    yield
    kill_leftovers()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from wbc.synth import generate
    out = tmp_path_factory.mktemp("faults") / "data"
    generate(str(out), images=12, size=128, seed=5, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """A run trained for one epoch from scratch: (logs, checkpoint, seconds it took)."""
    logs = str(tmp_path_factory.mktemp("trained") / "logs")
    child = Child(train_args(data, logs, "none", epochs=1), os.path.join(logs + ".err"))
    code = child.finish()
    assert code == 0, child.stdout + child.stderr
    (run,) = run_dirs(logs)
    return logs, os.path.join(run, "mask_rcnn_wbc_0001.h5"), time.time() - child.started


# ----------------------------------------------------------------------------- kill -9
def newest_checkpoint(logs):
    from mrcnn.model import find_last
    try:
        return str(find_last(logs, "WBC"))
    except FileNotFoundError:
        return None


def kill_at(child, mode, rng, logs, first_checkpoint_s):
    """SIGKILL the training child at a moment chosen by mode; returns a description."""
    def run_dir():
        line = child.line("Checkpoints go to ")
        return line[len("Checkpoints go to "):] if line else None

    def listing():
        folder = run_dir()
        return os.listdir(folder) if folder and os.path.isdir(folder) else []

    if mode == "anytime":
        delay = rng.uniform(0, 1.5 * first_checkpoint_s)
        wait_until(lambda: time.time() - child.started >= delay, child, interval=0.01)
    elif mode == "mid-save":         # while a checkpoint's temporary file is being written
        wait_until(lambda: any(".h5.tmp-" in n for n in listing()), child)
        time.sleep(rng.uniform(0, 0.05))
    elif mode == "after-save":       # losses.csv, curves.png, events, or the next step
        before = {n for n in listing() if CHECKPOINT.fullmatch(n)}
        wait_until(lambda: {n for n in listing() if CHECKPOINT.fullmatch(n)} - before, child)
        time.sleep(rng.uniform(0, 0.4))
    temp_at_kill = [n for n in listing() if n.startswith(".")]
    seconds = child.kill()
    assert child.proc.returncode == -9, (child.stdout, child.stderr)
    return {"mode": mode, "killed_after_s": round(seconds, 2), "temp_files_seen": temp_at_kill}


def check_after_kill(logs):
    """Every file opens; find_last = the newest complete checkpoint. Returns (newest or None,
    [temporary files left])."""
    newest, temps = None, []
    for folder in run_dirs(logs):
        checkpoints, left = check_run_folder(folder, LR)
        temps += [os.path.join(folder, n) for n in left]
        if checkpoints:
            newest = checkpoints[max(checkpoints)]
    assert newest_checkpoint(logs) == newest
    return newest, temps


def check_resume(child, expected, temps):
    """The resumed child loaded `expected` at its epoch with the run's learning rate, and
    removed the temporary files the killed run left in that run's folder (a run killed
    before its first checkpoint is a folder `--weights=last` passes over; it is left as is)."""
    temps = [p for p in temps if os.path.dirname(p) == os.path.dirname(expected)]
    assert child.wait_for_line("Checkpoints go to ") is not None, child.stdout + child.stderr
    assert child.line("Weights: ") == f"Weights: {expected}", child.stdout
    epoch = int(CHECKPOINT.search(expected).group(1))
    training = child.line("Training layers ")
    assert f"at learning rate {LR} from epoch {epoch} to" in training, training
    for path in temps:
        assert not os.path.exists(path) or ".h5.tmp-" not in os.path.basename(path), path
    if temps:
        removed = child.line("Removed ")
        assert removed and all(os.path.basename(p) in removed for p in temps), (removed, temps)
    return epoch


def prune(logs, keep=2):
    """Delete all but the newest `keep` checkpoints (83 MB each) once they were checked."""
    for folder in run_dirs(logs):
        names = sorted(n for n in os.listdir(folder) if CHECKPOINT.fullmatch(n))
        for name in names[:-keep]:
            os.remove(os.path.join(folder, name))


def kill_trials(tmp_path, data, logs, modes, rng, first_checkpoint_s):
    """Kill a chain of training runs (each resuming the last) once per mode, then finish
    with a clean run to the next epoch. Returns one record per trial."""
    records = []
    newest, temps = check_after_kill(logs)
    for trial, mode in enumerate(modes, 1):
        weights = "last" if newest else "none"
        child = Child(train_args(data, logs, weights, seed=trial), tmp_path / f"err{trial}.txt")
        start = check_resume(child, newest, temps) if newest else 0
        record = kill_at(child, mode, rng, logs, first_checkpoint_s)
        newest, temps = check_after_kill(logs)
        epoch = int(CHECKPOINT.search(newest).group(1)) if newest else 0
        assert epoch >= start
        record.update(trial=trial, resumed_from=start, newest_after_kill=epoch,
                      temp_files_left=[os.path.basename(p) for p in temps])
        records.append(record)
        print("kill -9 trial:", json.dumps(record), flush=True)
        prune(logs)
    target = int(CHECKPOINT.search(newest).group(1)) + 1 if newest else 1
    child = Child(train_args(data, logs, "last" if newest else "none", epochs=target),
                  tmp_path / "final.txt")
    if newest:
        check_resume(child, newest, temps)
    assert child.finish() == 0, child.stdout + child.stderr
    assert child.line("Done: ").endswith(f"mask_rcnn_wbc_{target:04d}.h5"), child.stdout
    final, left = check_after_kill(logs)
    assert final.endswith(f"{target:04d}.h5")
    # Temporary files stay only in a run killed before its first checkpoint: a folder that
    # nothing resumes (the README says to delete it), and that a new run never touches,
    # since it cannot tell a dead run from one starting beside it.
    assert not [p for p in left
                if any(CHECKPOINT.fullmatch(n) for n in os.listdir(os.path.dirname(p)))], left
    print(f"kill -9 trials: {len(records)}, all resumed; final run finished epoch {target}")
    return records


def test_kill9_during_training_then_resume(tmp_path, data, trained):
    logs = str(tmp_path / "logs")
    shutil.copytree(trained[0], logs)
    records = kill_trials(tmp_path, data, logs, ["mid-save", "after-save", "anytime"],
                          random.Random(6), trained[2])
    assert len(records) == 3
    assert records[0]["temp_files_seen"]          # the first kill hit a checkpoint write


@pytest.mark.slow
def test_kill9_many_trials_from_a_fresh_start(tmp_path, data, trained):
    seed = int(os.environ.get("WBC_KILL_SEED", "2026"))
    modes = ["anytime", "mid-save", "after-save"] * 4
    records = kill_trials(tmp_path, data, str(tmp_path / "logs"), modes, random.Random(seed),
                          trained[2])
    assert len(records) == 12
    assert sum(bool(r["temp_files_seen"]) for r in records) >= 4


# ----------------------------------------------------------------------------- disk full
def tiny_keras_model():
    import keras
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(64, name="dense_a"),
                             keras.layers.Dense(32, name="dense_b"),
                             keras.layers.Dense(4, name="dense_c")])


HDF5_ENOSPC = ("Unable to synchronously create dataset (file write failed: time = Thu Nov 26 "
               "18:00:00 2026, filename = 'x.h5', file descriptor = 7, errno = 28, error message "
               "= 'No space left on device', buf = 0x5, total write size = 8192, bytes this "
               "sub-write = 8192, bytes actually written = 18446744073709551615, offset = 0)")


def _fail_on_call(n, exc):
    calls = []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) >= n:
            raise exc
        return fail.real(*args, **kwargs)
    return fail


@pytest.mark.parametrize("where", ["dataset-errno", "dataset-hdf5-message", "flush", "fsync"])
def test_disk_full_while_saving_weights_keeps_the_previous_file(tmp_path, monkeypatch, where):
    from mrcnn import weights
    model = tiny_keras_model()
    path = str(tmp_path / "mask_rcnn_wbc_0003.h5")
    weights.save_weights(model, path)
    before = sha(path)
    model.get_layer("dense_a").kernel.assign(np.ones((8, 64), np.float32))
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    target, attr, exc, n = {
        "dataset-errno": (h5py.Group, "create_dataset", enospc, 3),
        "dataset-hdf5-message": (h5py.Group, "create_dataset", OSError(HDF5_ENOSPC), 2),
        "flush": (h5py.File, "flush", OSError(HDF5_ENOSPC), 1),
        "fsync": (weights.os, "fsync", enospc, 1)}[where]
    fail = _fail_on_call(n, exc)
    fail.real = getattr(target, attr)
    monkeypatch.setattr(target, attr, fail)
    with pytest.raises(weights.WeightsWriteError) as info:
        weights.save_weights(model, path)
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and "\n" not in message
    assert path in message and "disk is full" in message and "MB free" in message
    assert sha(path) == before                                  # the previous file, intact
    assert os.listdir(tmp_path) == ["mask_rcnn_wbc_0003.h5"]   # no temporary file left
    weights.save_weights(model, path)                           # space again: it saves
    assert sha(path) != before


DISK_FULL_ON_FIRST_SAVE = """
import runpy, sys, h5py
real, calls = h5py.Group.create_dataset, []
def create_dataset(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 25:          # part-way through the first checkpoint of this process
        raise OSError(%r)
    return real(self, *args, **kwargs)
h5py.Group.create_dataset = create_dataset
sys.argv = [%r] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def files_sha(folder):
    return {n: sha(os.path.join(folder, n)) for n in os.listdir(folder)}


def train_from_a_copy_with_disk_full(tmp_path, data, trained, new_run):
    """Train from a copy of the `trained` run (in a fresh --logs) with the disk full part-way
    through the first checkpoint this process writes: resume it (--weights=last) or, with
    new_run, fine-tune from its checkpoint (--new-run). Expects exit 2 with one error line.
    Returns (that line, the source checkpoint, {file: sha256} of the source run before)."""
    logs = str(tmp_path / "logs")
    shutil.copytree(trained[0], logs)
    (run,) = run_dirs(logs)
    checkpoint = os.path.join(run, "mask_rcnn_wbc_0001.h5")
    before = files_sha(run)
    args = (train_args(data, logs, checkpoint, epochs=2) + ["--new-run"] if new_run
            else train_args(data, logs, "last", epochs=3))
    code = DISK_FULL_ON_FIRST_SAVE % (HDF5_ENOSPC, os.path.join(ROOT, "WBC.py"))
    child = Child(args, tmp_path / "err.txt", code=code)
    assert child.finish() == 2, child.stdout + child.stderr
    errors = [line for line in child.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in child.stderr, child.stderr
    assert "disk is full" in errors[0]
    return errors[0], checkpoint, before


def test_train_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(
        tmp_path, data, trained):
    error, previous, before = train_from_a_copy_with_disk_full(tmp_path, data, trained, False)
    run = os.path.dirname(previous)
    assert "mask_rcnn_wbc_0002.h5" in error
    assert f"last complete checkpoint is {previous} (intact)" in error
    assert "--weights=last" in error
    assert sha(previous) == before["mask_rcnn_wbc_0001.h5"]
    new = set(os.listdir(run)) - set(before)      # only the resumed run's TensorBoard file
    assert all(n.startswith("events.out.tfevents.") for n in new), new
    assert sha(os.path.join(run, "losses.csv")) == before["losses.csv"]
    assert newest_checkpoint(os.path.dirname(run)) == previous
    check_run_folder(run, LR)


def test_new_run_disk_full_before_its_first_checkpoint_says_start_again(tmp_path, data, trained):
    """The newest checkpoint in --logs is the source run's: the message must not offer it,
    nor --weights=last, which would continue the source run instead of the fine-tuning."""
    error, source, before = train_from_a_copy_with_disk_full(tmp_path, data, trained, True)
    assert "No checkpoint of this run was written yet" in error
    assert "run the same command again" in error
    assert source not in error and "--weights=last" not in error
    assert files_sha(os.path.dirname(source)) == before


def test_resume_command_names_the_checkpoint_when_a_newer_run_would_be_last(tmp_path):
    import argparse
    import WBC
    logs = tmp_path / "logs"
    old, new = logs / "wbc20260101T0900", logs / "wbc20260102T0900"
    for folder, epoch in [(old, 3), (new, 1)]:
        folder.mkdir(parents=True)
        (folder / f"mask_rcnn_wbc_{epoch:04d}.h5").write_bytes(b"")
    args = argparse.Namespace(dataset="WBC", logs=str(logs), epochs=9, mix_in=[])

    def resume(checkpoint, epoch, last_epoch=9):
        return WBC.resume_command(args, argparse.Namespace(
            last_checkpoint=str(checkpoint), epoch=epoch, last_epoch=last_epoch))
    assert f"--weights={old / 'mask_rcnn_wbc_0003.h5'} " in resume(old / "mask_rcnn_wbc_0003.h5", 3)
    assert "--weights=last " in resume(new / "mask_rcnn_wbc_0001.h5", 1)
    assert resume(new / "mask_rcnn_wbc_0001.h5", 1).endswith("--epochs=9")
    # A stop in the last epoch saves it as done: resuming must ask for one more.
    assert resume(new / "mask_rcnn_wbc_0001.h5", 9).endswith("--epochs=10")
    # --time-budget moved the run's end to epoch 5: resuming continues that plan
    assert resume(new / "mask_rcnn_wbc_0001.h5", 1, last_epoch=5).endswith("--epochs=5")
    # a stop before train() started (no plan yet) falls back to --epochs
    assert resume(new / "mask_rcnn_wbc_0001.h5", 1, last_epoch=None).endswith("--epochs=9")
    # --mix-in flags are repeated, quoted for the shell as every path is
    args.dataset, args.mix_in = "my data", [WBC.mix_in_flag("drawn cells:Basophil=20"),
                                            WBC.mix_in_flag("more:Eosi=2")]
    line = resume(new / "mask_rcnn_wbc_0001.h5", 1)
    assert "--dataset='my data' " in line
    assert line.endswith("--epochs=9 --mix-in='drawn cells:Basophil=20' --mix-in=more:Eosi=2")


SIGINT_IN_VALIDATION = """
import os, runpy, signal, sys
from mrcnn import model
real = model.MaskRCNN._run_epoch
def run_epoch(self, step_fn, batches, steps, callbacks, desc, progress):
    if callbacks is None and self.epoch + 1 == %d:     # validation of that epoch
        os.kill(os.getpid(), signal.SIGINT)
    return real(self, step_fn, batches, steps, callbacks, desc, progress)
model.MaskRCNN._run_epoch = run_epoch
sys.argv = [%r] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("epoch, last", [(1, False), (2, True)])
def test_ctrl_c_during_validation(tmp_path, data, epoch, last):
    """Ctrl-C while epoch 1 of 2 is validated stops with epoch 1 saved, not a step into
    epoch 2 (which would count as done); during the last epoch's validation it finds the
    training finished: exit 0 and "Done", no resume command."""
    logs = str(tmp_path / "logs")
    args = train_args(data, logs, "none", epochs=2)
    args[args.index("--steps-per-epoch=1")] = "--steps-per-epoch=3"
    child = Child(args, tmp_path / "err.txt",
                  code=SIGINT_IN_VALIDATION % (epoch, os.path.join(ROOT, "WBC.py")))
    code = child.finish()
    out = child.stdout
    (run,) = run_dirs(logs)
    checkpoints = sorted(n for n in os.listdir(run) if n.endswith(".h5"))
    assert checkpoints == [f"mask_rcnn_wbc_{e:04d}.h5" for e in range(1, epoch + 1)]
    if last:
        assert code == 0 and "Done:" in out and "Resume" not in out, out + child.stderr
    else:
        assert code == 130 and "Interrupted (SIGINT)" in out, out + child.stderr
        assert "--weights=last " in out and out.rstrip().endswith("--epochs=2"), out


class FakeModel:
    """Stands in for an inference model: one square cell of class 5 per image."""

    def detect(self, images):
        image = images[0]
        masks = np.zeros(image.shape[:2] + (1,), bool)
        masks[4:20, 4:20, 0] = True
        return [{"rois": np.array([[4, 4, 20, 20]], np.int32),
                 "class_ids": np.array([5], np.int32), "scores": np.array([0.9], np.float32),
                 "masks": masks}]


def smear_folder(folder, n):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(
            os.path.join(folder, f"s{i:02d}.png"))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


@pytest.mark.parametrize("failing", ["overlay", "record", "detections.json"])
def test_detect_disk_full_is_one_line_and_a_rerun_completes(tmp_path, monkeypatch, failing):
    import wbc.detect
    import wbc.figures
    from wbc.dataset import CLASS_NAMES
    files = smear_folder(str(tmp_path / "smears"), 5)
    out = str(tmp_path / "out")
    wbc.detect.detect_files(FakeModel(), files[:2], out, CLASS_NAMES, progress=False)
    done = {n: sha(os.path.join(out, n)) for n in os.listdir(out) if n.endswith(".png")}
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if failing == "overlay":
        fail = _fail_on_call(3, enospc)            # the second new image's overlay
        fail.real = wbc.figures.save_png
        monkeypatch.setattr(wbc.figures, "save_png", fail)
    else:
        real = wbc.detect.write_json

        def fail(path, *args, **kwargs):
            if (failing == "record" and ".records" in path and "s03" in path) or \
                    os.path.basename(path) == failing:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            return real(path, *args, **kwargs)
        monkeypatch.setattr(wbc.detect, "write_json", fail)
    with pytest.raises(UserError) as info:
        wbc.detect.detect_files(FakeModel(), files, out, CLASS_NAMES, progress=False)
    monkeypatch.undo()
    message = str(info.value)
    assert "\n" not in message and "disk is full" in message and "run the same command" in message
    assert {n: sha(os.path.join(out, n)) for n in done} == done   # finished images intact
    summary = wbc.detect.detect_files(FakeModel(), files, out, CLASS_NAMES, progress=False)
    assert summary.startswith("5 images, 5 cells")
    check_detect_outputs(out, files)


# ----------------------------------------------------------------------------- detect kill -9
def check_detect_outputs(out, files):
    """Every image has its overlay, label image and record; detections.json and counts.csv
    are valid and cover every image once; no temporary file is left."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    for stem in stems:
        for suffix in ("_overlay.png", "_labels.png"):
            with Image.open(os.path.join(out, stem + suffix)) as img:
                img.load()
        with open(os.path.join(out, ".records", stem + ".json")) as f:
            assert json.load(f)["file_name"] == stem + ".png"
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)
    assert {d["file_name"] for d in detections} <= {s + ".png" for s in stems}
    with open(os.path.join(out, "counts.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(s + ".png" for s in stems)
    assert sum(int(r["cells"]) for r in rows) == len(detections)
    leftovers = [n for d in (out, os.path.join(out, ".records")) for n in os.listdir(d)
                 if ".tmp" in n]
    assert not leftovers, leftovers


def test_detect_lists_every_image_of_its_folder_once(tmp_path):
    """Images added by a later run are listed with the earlier ones; an image whose output
    name changes (a.png, then a.bmp beside it: 'a' becomes 'a_png') is listed once."""
    import wbc.detect
    from wbc.dataset import CLASS_NAMES
    first, second = (str(tmp_path / d) for d in ("day1", "day2"))
    done = smear_folder(first, 2)
    out = str(tmp_path / "out")
    wbc.detect.detect_files(FakeModel(), done, out, CLASS_NAMES, progress=False)
    (made,) = smear_folder(second, 1)
    added = made.replace("s00", "t00")
    os.rename(made, added)
    summary = wbc.detect.detect_files(FakeModel(), [added], out, CLASS_NAMES, progress=False)
    assert summary.startswith("3 images, 2 of them from earlier runs, 3 cells"), summary
    twin = done[0][:-len(".png")] + ".bmp"
    Image.open(done[0]).save(twin)
    summary = wbc.detect.detect_files(FakeModel(), done + [twin], out, CLASS_NAMES,
                                      progress=False)
    assert summary.startswith("4 images, 1 of them from earlier runs, 4 cells"), summary
    with open(os.path.join(out, "counts.csv"), newline="") as f:
        listed = sorted(r["image"] for r in csv.DictReader(f))
    assert listed == ["s00.bmp", "s00.png", "s01.png", "t00.png"]


def test_detect_killed_then_rerun_skips_done_and_redoes_half_done(tmp_path, trained):
    from wbc.synth import generate
    generate(str(tmp_path / "gen"), images=30, size=128, seed=9, val_fraction=0, progress=False)
    smears = tmp_path / "smears"
    smears.mkdir()
    for folder, _, names in os.walk(tmp_path / "gen" / "train" / "image"):
        for name in names:
            shutil.copy(os.path.join(folder, name), smears / name)
    files = sorted(str(p) for p in smears.iterdir())
    inputs = {p: sha(p) for p in files}
    out = str(tmp_path / "out")
    args = ["detect", f"--images={smears}", f"--weights={trained[1]}", f"--out={out}",
            "--min-confidence=0"]
    records = os.path.join(out, ".records")

    def done():
        return sorted(n for n in os.listdir(records) if n.endswith(".json")) \
            if os.path.isdir(records) else []
    child = Child(args, tmp_path / "err1.txt")
    wait_until(lambda: len(done()) >= 3, child)
    child.kill()
    finished = done()
    assert 3 <= len(finished) < len(files), finished            # killed mid-run
    # Make sure both kinds of unfinished image are there: one whose outputs were written
    # but not its record (killed between the two), one with a record cut short.
    half = finished[0][:-5]
    os.remove(os.path.join(records, finished[0]))
    cut = os.path.join(records, finished[1])
    open(cut, "w").write(open(cut).read()[:20])
    kept = {n: os.stat(os.path.join(out, n[:-5] + "_overlay.png")).st_mtime_ns
            for n in finished[2:]}
    child = Child(args, tmp_path / "err2.txt")
    assert child.finish() == 0, child.stdout + child.stderr
    assert f"{len(finished) - 2} of {len(files)} images already done" in child.stdout
    check_detect_outputs(out, files)
    for name, mtime in kept.items():                             # skipped, not redone
        assert os.stat(os.path.join(out, name[:-5] + "_overlay.png")).st_mtime_ns == mtime
    with open(os.path.join(records, half + ".json")) as f:
        assert json.load(f)["file_name"] == half + ".png"
    assert {p: sha(p) for p in files} == inputs                  # the user's images unchanged
