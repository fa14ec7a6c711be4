"""Crash-safe files: atomic JSON writes, leftovers of killed runs, write errors in plain words.

Every output of the tool is written to a temporary name in its own folder and renamed into
place, so a reader (or `--weights=last`) never sees half a file. A process killed mid-write
leaves its temporary file behind; :func:`remove_stale_temp_files` deletes those when the
next run starts in the same folder. :func:`write_error_message` turns an OSError from a
write (a full disk above all) into one line naming the file and what to do.
"""
import errno
import json
import os
import shutil

from mrcnn.durable import replacing

# Temporary names used by the writers: ".<name>.tmp-<pid>-<n>" (mrcnn.durable.replacing:
# JSON, CSV, PNG; weights; mrcnn.durable.creating: the images and masks of synth and
# import-lisc); ".tmp-*.h5" (weights), "<name>.tmp" (JSON, CSV) and ".<name>.<pid>.tmp"
# (synth) from earlier versions. The next train or detect in a folder removes the leftovers
# there; the data set reader skips hidden files, so leftovers of synth and import-lisc are
# ignored.
_PLAIN_TMP_TARGETS = ("losses.csv", "config.json", "detections.json", "counts.csv")
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def write_json(path, data, indent=None):
    """Write data as JSON atomically (mrcnn.durable.replacing); non-JSON values as str.
    On any failure a file already at `path` is unchanged."""
    with replacing(path) as f:
        json.dump(data, f, indent=indent, default=str)


def read_json(path):
    """The JSON value in the file at `path`, or None if it is missing or cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_temp_name(name):
    """True for the temporary names our writers use (see the module docstring)."""
    if name.startswith(".") and ".tmp" in name:
        return True
    return name.endswith(".tmp") and (name[:-4] in _PLAIN_TMP_TARGETS
                                      or name.endswith(".json.tmp"))


def remove_stale_temp_files(folder):
    """Delete the temporary files a killed run left in folder (not recursive); returns their
    names. Call it only when no other process writes into folder."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if is_temp_name(name) and os.path.isfile(path):
            try:
                os.remove(path)
                removed.append(name)
            except OSError:
                pass
    return removed


def is_disk_full(exc):
    """True if exc says the disk (or the user's quota) is full. HDF5 errors carry no errno,
    only the text of the C library's message."""
    if getattr(exc, "errno", None) in _DISK_FULL:
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def free_megabytes(folder):
    """Free space in MB on folder's file system, or None if unknown."""
    try:
        return shutil.disk_usage(folder).free / 1e6
    except OSError:
        return None


def write_error_message(exc, what, folder):
    """One line for an OSError raised while writing `what` into folder."""
    if is_disk_full(exc):
        free = free_megabytes(folder)
        room = f", {free:.0f} MB free" if free is not None else ""
        return f"{what}: the disk is full ({folder}{room})"
    reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    where = getattr(exc, "filename", None) or folder
    return f"{what}: cannot write {where} ({reason})"
