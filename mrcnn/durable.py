"""Durable renames: after os.replace() into a folder, fsync the folder so the new name
survives a power cut. No third-party imports (the product's `check` uses it without
TensorFlow)."""
import os


def fsync_folder(folder):
    """Make a rename inside folder durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
