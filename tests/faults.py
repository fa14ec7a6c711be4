"""Helpers of the fault tests (test_faults.py): running WBC.py as a child process that can
be killed at a chosen moment, and checking that every file a killed run left opens.

Nothing here imports TensorFlow at import time (`check_run_folder` imports mrcnn.weights,
and so Keras, when called).
"""
import csv
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

from PIL import Image

from conftest import ROOT

WBC = os.path.join(ROOT, "WBC.py")
CHECKPOINT = re.compile(r"mask_rcnn_wbc_(\d{4})\.h5")
STARTED = []          # every Child, so that a failed test can kill those still running


def child_env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                PYTHONPATH=ROOT, **extra)


class Child:
    """`python3 WBC.py ARGS` (or `python3 -c CODE ARGS`) with its stdout read line by line
    in a thread; stderr goes to a file (the progress bars are long). Its temporary files
    (TensorFlow's autograph writes some and removes them at exit, which SIGKILL skips) go to
    a folder beside that file, inside the test's own tmp_path, not to /tmp."""

    def __init__(self, args, err_path, code=None):
        cmd = [sys.executable] + (["-c", code] if code else [WBC]) + [str(a) for a in args]
        self.started = time.time()
        self.err_path = err_path
        self._err = open(err_path, "w")
        temp = os.path.splitext(err_path)[0] + "-tmp"
        os.makedirs(temp, exist_ok=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True,
                                     env=child_env(TMPDIR=temp), stdin=subprocess.DEVNULL,
                                     cwd=ROOT)
        STARTED.append(self)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, prefix):
        return next((line for line in self.lines if line.startswith(prefix)), None)

    def wait_for_line(self, prefix, timeout=600):
        """The first stdout line starting with prefix, or None if the process ended first."""
        end = time.time() + timeout
        while time.time() < end:
            found = self.line(prefix)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                self._reader.join(5)
                return self.line(prefix)
            time.sleep(0.01)
        raise TimeoutError(f"no line {prefix!r} after {timeout} s")

    def kill(self):
        """SIGKILL (if still running) and reap; returns seconds since the start."""
        elapsed = time.time() - self.started
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.finish()
        return elapsed

    def finish(self, timeout=600):
        self.proc.wait(timeout)
        self._reader.join(10)
        self._err.close()
        return self.proc.returncode

    @property
    def stdout(self):
        return "\n".join(self.lines)

    @property
    def stderr(self):
        with open(self.err_path) as f:
            return f.read()


def kill_leftovers():
    """SIGKILL the children of this process still running (after a failed test)."""
    while STARTED:
        child = STARTED.pop()
        if child.proc.poll() is None:
            child.kill()


def wait_until(predicate, child, timeout=600, interval=0.002):
    """Poll predicate() until it is true; False if the child ended first."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if child.proc.poll() is not None:
            return bool(predicate())
        time.sleep(interval)
    raise TimeoutError("condition not met")


def read_event_file(path):
    """Number of complete records of a TensorBoard event file. Every complete record must
    have valid CRCs and parse as an Event; only the last one may be cut short (an
    append-only file of a killed writer; TensorBoard ignores such a tail)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    data = open(path, "rb").read()
    i = count = 0
    while i < len(data):
        if len(data) - i < 12:
            break                                     # cut inside the header: the tail
        (length,) = struct.unpack("<Q", data[i:i + 8])
        (crc,) = struct.unpack("<I", data[i + 8:i + 12])
        assert masked_crc32c(data[i:i + 8]) == crc, f"{path}: bad length CRC at {i}"
        if len(data) - i < 16 + length:
            break                                     # cut inside the last record
        body = data[i + 12:i + 12 + length]
        assert masked_crc32c(body) == struct.unpack("<I", data[i + 12 + length:i + 16 + length])[0]
        event_pb2.Event.FromString(body)
        i += 16 + length
        count += 1
    return count


def check_run_folder(run_dir, lr):
    """Open every file of a training run folder; returns ({epoch: checkpoint path}, [temporary
    file names]). Checkpoints must load as weight files, losses.csv and config.json parse
    (with learning rate `lr`), curves.png decode and event files read. Temporary files (a
    killed writer's) are listed, not opened."""
    from mrcnn.weights import read_weight_file
    from wbc.files import is_temp_name
    checkpoints, temps, rows = {}, [], None
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        match = CHECKPOINT.fullmatch(name)
        if is_temp_name(name):
            temps.append(name)
        elif match:
            layers = read_weight_file(path)
            assert len(layers) > 20 and all(
                v.size and all(math.isfinite(x) for x in v.ravel()[:50])
                for pairs in layers.values() for _, v in pairs), name
            checkpoints[int(match.group(1))] = path
        elif name == "losses.csv":
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        elif name == "config.json":
            with open(path) as f:
                config = json.load(f)
            assert config["LEARNING_RATE"] == lr and config["BACKBONE"] == "small"
        elif name == "curves.png":
            with Image.open(path) as img:
                img.load()
        elif name.startswith("events.out.tfevents."):
            read_event_file(path)
        else:
            raise AssertionError(f"unexpected file in the run folder: {name}")
    epochs = sorted(checkpoints)
    assert epochs == list(range(epochs[0], epochs[0] + len(epochs))) if epochs else True, epochs
    if rows is not None:
        done = [int(r["epoch"]) for r in rows]
        assert done == sorted(set(done)) and (not done or done[-1] <= max(epochs or [0])), done
        for r in rows:
            assert float(r["lr"]) == lr and all(math.isfinite(float(v)) for v in r.values() if v)
    return checkpoints, temps
