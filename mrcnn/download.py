"""Download of Matterport's COCO weights (re-exported by ``mrcnn.utils``)."""
import os
import sys
import urllib.error
import urllib.request

#: Matterport's released COCO weights (Keras-2 HDF5 layout).
COCO_MODEL_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"



_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def download_trained_weights(coco_model_path, verbose=1):
    """Download Matterport's COCO weights (``COCO_MODEL_URL``) to ``coco_model_path``.

    The file is written to ``<coco_model_path>.part`` and renamed only when
    complete, after checking that its size equals the server's
    Content-Length and that it is an HDF5 file; an interrupted download never
    leaves a half file under the final name. ``verbose`` > 0 prints messages
    and shows a tqdm progress bar.

    Raises RuntimeError (with the URL and where to put the file by hand) if
    the download fails, e.g. when the machine is offline.
    """
    coco_model_path = os.fspath(coco_model_path)
    part_path = coco_model_path + ".part"
    manual = ("If this machine is offline, download {} on another machine and place it at {}"
              .format(COCO_MODEL_URL, os.path.abspath(coco_model_path)))
    if verbose > 0:
        print("Downloading pretrained model to " + coco_model_path + " ...")
    parent = os.path.dirname(os.path.abspath(coco_model_path))
    os.makedirs(parent, exist_ok=True)
    try:
        from tqdm import tqdm

        request = urllib.request.Request(COCO_MODEL_URL, headers={"User-Agent": "mrcnn"})
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length else None
            with open(part_path, "wb") as out, tqdm(
                    total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=os.path.basename(coco_model_path), disable=verbose <= 0,
                    file=sys.stdout) as bar:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
        size = os.path.getsize(part_path)
        if expected is not None and size != expected:
            raise RuntimeError("Download of the COCO weights failed: got {} of {} bytes from {}. {}"
                               .format(size, expected, COCO_MODEL_URL, manual))
        with open(part_path, "rb") as f:
            head = f.read(2048 + len(_HDF5_SIGNATURE))
        if not any(head[o:o + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE for o in (0, 512, 1024, 2048)):
            raise RuntimeError("Download of the COCO weights failed: {} did not return an HDF5 file. {}"
                               .format(COCO_MODEL_URL, manual))
        os.replace(part_path, coco_model_path)
    except RuntimeError:
        _remove_quietly(part_path)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        _remove_quietly(part_path)
        raise RuntimeError("Download of the COCO weights from {} failed ({}). {}"
                           .format(COCO_MODEL_URL, e, manual)) from e
    except BaseException:
        _remove_quietly(part_path)
        raise
    if verbose > 0:
        print("... done downloading pretrained model!")


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
