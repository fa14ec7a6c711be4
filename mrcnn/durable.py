"""Durable writes: a file is written whole under a temporary name beside its target, synced,
then renamed into place, and the folder is synced so the new name survives a power cut. No
third-party imports (the product's `check` uses it without TensorFlow).

Temporary names are ".<target name>.tmp-<pid>-<n>": hidden, and recognisable as leftovers
of a killed process by the next run in the same folder.
"""
import contextlib
import errno
import itertools
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


def temporary_names(path):
    """Endless candidates ".<name>.tmp-<pid>-<n>" beside path, for a caller to create the
    first that does not exist yet (os.open with O_EXCL, os.mkdir)."""
    folder, base = os.path.split(os.path.abspath(path))
    return (os.path.join(folder, f".{base}.tmp-{os.getpid()}-{n}") for n in itertools.count())


def create_temporary(path):
    """(fd, name) of a new file beside path, created like open(path, "w") would be (mode
    0o666 filtered by the umask, unlike tempfile's 0o600)."""
    for tmp in temporary_names(path):
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def create_temporary_folder(path):
    """A new folder beside path (its name from temporary_names), with the permissions of an
    ordinary os.mkdir (tempfile.mkdtemp's are 0o700)."""
    for folder in temporary_names(path):
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            continue


@contextlib.contextmanager
def _written_then(path, commit, mode, open_args):
    """Yield a file object on a new temporary file beside path; on a clean exit flush and
    fsync it, commit(temporary, path), fsync the folder; on an exception remove it."""
    path = os.fspath(path)
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_folder(os.path.dirname(os.path.abspath(path)))


def replacing(path, mode="w", **open_args):
    """`with replacing(path) as f: f.write(...)` writes path whole or not at all.

    Yields a file object (open(..., mode, **open_args)) on a new temporary file beside path.
    A clean exit flushes and fsyncs it, renames it to path (os.replace) and fsyncs the
    folder; an exception removes it and leaves path as it was."""
    return _written_then(path, os.replace, mode, open_args)


def creating(path, mode="w", **open_args):
    """`with creating(path) as f: f.write(...)` writes a new file path whole or not at all,
    and never replaces one: if path exists when the writing is done, FileExistsError is
    raised and the file there is left as it was. Otherwise as `replacing`."""
    return _written_then(path, _move_unless_present, mode, open_args)


def _move_unless_present(tmp, path):
    """Rename tmp to path, or FileExistsError if path exists: a hard link (atomic, fails on
    an existing name) where the file system has them, else a check then a rename."""
    exists = FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists from None
    except OSError:                      # no hard links here (FAT, some network shares)
        if os.path.lexists(path):
            raise exists from None
        os.rename(tmp, path)
        return
    with contextlib.suppress(OSError):
        os.remove(tmp)
