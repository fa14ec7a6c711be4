"""Running a trained model over files: `detect` (overlays, label images, results JSON, counts)
and `evaluate` (detections of a dataset subset scored against its masks).

Per image, detect keeps one outline per cell (wbc.outlines: of two detections whose masks
overlap with IoU > 0.5 the better scored) and writes `<stem>_overlay.png` (outlines, class
names, scores) and `<stem>_labels.png` (uint16 instance labels, 0 = background) into --out,
then a small record `.records/<stem>.json`; an image whose record exists is done and skipped on
a rerun, so a killed run resumes where it stopped. A record of another file with the same stem
(day1/1.bmp done, day2/1.bmp asked) is an error, not "done". The folder's `detections.json`
(COCO results) and `counts.csv` are rebuilt from all its records at the end of every run, so
images added by later runs into the same folder are listed with the earlier ones. Every file is
written to a temporary name and renamed; temporary files of a killed run are removed by the
next run, and a record that cannot be read counts as not done. A full disk stops the run with
one line (finished images stay done).
"""
import concurrent.futures
import csv
import os
import sys
import time

import numpy as np

from wbc.dataset import read_image
from wbc.errors import UserError
from mrcnn.durable import replacing
from wbc.files import read_json, remove_stale_temp_files, write_error_message, write_json
from wbc.outlines import one_outline_per_cell

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
RECORDS = ".records"


def list_images(image=None, images_dir=None):
    """The image files named by --image or found (not recursively) in --images."""
    if image:
        if not os.path.isfile(image):
            raise UserError(f"--image={image}: file not found")
        return [image]
    if not os.path.isdir(images_dir):
        raise UserError(f"--images={images_dir}: folder not found")
    files = sorted(os.path.join(images_dir, f) for f in os.listdir(images_dir)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    if not files:
        raise UserError(f"--images={images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def output_stem(path, taken):
    """File stem used for outputs; the full file name when two inputs share a stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.basename(path).replace(".", "_") if taken.count(stem) > 1 else stem


def count_classes(class_ids, class_names):
    return {name: int(np.sum(np.asarray(class_ids) == i + 1)) for i, name in enumerate(class_names)}


def _save_outputs(image, result, path, stem, out_dir, class_names):
    """Overlay, label image and record of one image (the record last: it marks 'done')."""
    from wbc.evaluate import to_coco_results
    from wbc.figures import draw_overlay, label_image, save_png
    save_png(draw_overlay(image, result["masks"], result["class_ids"], result["scores"],
                          ["BG"] + list(class_names)), os.path.join(out_dir, f"{stem}_overlay.png"))
    save_png(label_image(result["masks"]), os.path.join(out_dir, f"{stem}_labels.png"))
    detections = to_coco_results([dict(result, image_id=0)])
    for d in detections:
        d.pop("image_id", None)
    write_json(os.path.join(out_dir, RECORDS, f"{stem}.json"), {
        "file": os.path.abspath(path), "file_name": os.path.basename(path),
        "height": int(image.shape[0]), "width": int(image.shape[1]),
        "detections": detections, "counts": count_classes(result["class_ids"], class_names)})


def read_record(out_dir, stem):
    """The record of a finished image, or None if there is none or it cannot be read."""
    record = read_json(os.path.join(out_dir, RECORDS, f"{stem}.json"))
    keys = {"file_name", "detections", "counts"}
    return record if isinstance(record, dict) and keys <= set(record) else None


def plan_jobs(files, out_dir):
    """(all jobs, jobs not done yet in out_dir) as lists of (path, output stem). UserError
    if out_dir holds the results of another file under a job's stem."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    jobs = [(f, output_stem(f, stems)) for f in files]
    todo = []
    for path, stem in jobs:
        record = read_record(out_dir, stem)
        if record is None:
            todo.append((path, stem))
        elif os.path.realpath(record.get("file", path)) != os.path.realpath(path):
            raise UserError(f"--out={out_dir}: holds the results of {record['file']} as "
                            f"'{stem}', the name {path} would take. Give another --out for "
                            "these images, or rename the file")
    return jobs, todo


def recorded_stems(out_dir):
    """Stems of every record in out_dir (finished or not readable), sorted."""
    try:
        names = os.listdir(os.path.join(out_dir, RECORDS))
    except OSError:
        return []
    return sorted(n[:-len(".json")] for n in names if n.endswith(".json"))


def earlier_records(out_dir, jobs):
    """The readable records in out_dir (by stem) of files that are not among `jobs` (path,
    stem): images earlier runs added. A job's file recorded under another stem (a.png done as
    'a' before a.bmp came and made it 'a_png') is not an earlier image."""
    current_stems = {stem for _, stem in jobs}
    current_files = {os.path.realpath(path) for path, _ in jobs}
    earlier = []
    for stem in recorded_stems(out_dir):
        record = None if stem in current_stems else read_record(out_dir, stem)
        if record is not None and os.path.realpath(record.get("file", "")) not in current_files:
            earlier.append(record)
    return earlier


MODEL_RECORD = ".model.json"


def claim_out_dir(out_dir, model_description, todo_stems):
    """Record which model writes into out_dir (out_dir/.model.json). UserError if out_dir
    keeps results (records other than `todo_stems`, which are redone) of another model, so
    that one folder never mixes the answers of two models."""
    path = os.path.join(out_dir, MODEL_RECORD)
    before = read_json(path)
    kept = set(recorded_stems(out_dir)) - set(todo_stems)
    if kept and before is not None and before != model_description:
        raise UserError(f"--out={out_dir}: holds detections made with {before}, not with "
                        f"{model_description}. Give another --out, or delete the folder to "
                        "start over")
    write_json(path, model_description)


def prepare_out_dir(out_dir):
    """Create out_dir/.records and remove the temporary files of a killed run."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out={out_dir}: is a file, not a folder. Give a folder for the "
                        "results")
    try:
        os.makedirs(os.path.join(out_dir, RECORDS), exist_ok=True)
    except OSError as exc:
        raise UserError(write_error_message(exc, f"--out={out_dir}", out_dir)) from None
    remove_stale_temp_files(out_dir)
    remove_stale_temp_files(os.path.join(out_dir, RECORDS))


def _raise_write_error(exc, out_dir):
    raise UserError(write_error_message(exc, "detect stopped", out_dir) + ". Images finished "
                    "so far are kept; free some space and run the same command again to "
                    "continue") from None


def detect_files(model, files, out_dir, class_names, progress=True, model_description=None):
    """Detect on every file not done yet in out_dir; returns a one-line summary.
    `model` may be None when nothing is left to do. `model_description` (JSON: weights and
    options), if given, is claimed for out_dir before anything is written (claim_out_dir)."""
    from tqdm import tqdm
    prepare_out_dir(out_dir)
    jobs, todo = plan_jobs(files, out_dir)
    if todo and model_description is not None:
        claim_out_dir(out_dir, model_description, [stem for _, stem in todo])
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"{skipped} of {len(jobs)} images already done in {out_dir}: skipped")
    failed, started = [], time.time()
    with concurrent.futures.ThreadPoolExecutor(2, "wbc-io") as pool:
        reads = [pool.submit(read_image, f) for f, _ in todo[:2]]
        writes, write_failed = [], []
        for i, (path, stem) in enumerate(tqdm(todo, desc="detect", unit="image",
                                              disable=not progress, file=sys.stderr)):
            if write_failed:        # a failed write (a full disk) stops the run; raised below
                break
            if i + 2 < len(todo):   # decode two images ahead of the model
                reads.append(pool.submit(read_image, todo[i + 2][0]))
            try:
                image = reads[i].result()
            except UserError as exc:
                failed.append(str(exc))
                continue
            result = one_outline_per_cell(model.detect([image])[0])
            writes.append(pool.submit(_save_outputs, image, result, path, stem, out_dir,
                                      class_names))
            writes[-1].add_done_callback(lambda f: f.exception() and write_failed.append(f))
            reads[i] = None
        for w in writes:
            try:
                w.result()
            except OSError as exc:
                _raise_write_error(exc, out_dir)
    elapsed = time.time() - started
    for message in failed[:5]:
        print(f"warning: skipped {message}", file=sys.stderr)
    if len(failed) > 5:
        print(f"warning: {len(failed) - 5} more unreadable images skipped", file=sys.stderr)
    records = [read_record(out_dir, stem) for _, stem in jobs]
    earlier = earlier_records(out_dir, jobs)
    try:
        totals, listed = assemble_run_outputs(out_dir, records + earlier, class_names)
    except OSError as exc:
        _raise_write_error(exc, out_dir)
    rate = (len(todo) - len(failed)) / elapsed * 3600 if todo and elapsed > 0 else 0
    cells = ", ".join(f"{n} {k}" for k, n in totals.items() if n)
    before = f", {len(earlier)} of them from earlier runs" if earlier else ""
    return (f"{listed} images{before}, {sum(totals.values())} cells ({cells or 'none'})"
            f" -> {out_dir}/ ({rate:.0f} images/hour)")


def assemble_run_outputs(out_dir, records, class_names):
    """Rebuild detections.json (COCO results) and counts.csv from `records` (read_record's,
    None for an image without one); returns (cells per class, number of images listed)."""
    results, rows = [], []
    totals = dict.fromkeys(class_names, 0)
    for image_id, record in enumerate(records):
        if record is None:
            continue
        for d in record["detections"]:
            results.append(dict(d, image_id=image_id, file_name=record["file_name"]))
        counts = record["counts"]
        total = sum(counts.values())
        rows.append([record["file_name"], total] + [counts[c] for c in class_names]
                    + [f"{100 * counts[c] / total:.1f}" if total else "" for c in class_names])
        for c in class_names:
            totals[c] += counts[c]
    write_json(os.path.join(out_dir, "detections.json"), results)
    with replacing(os.path.join(out_dir, "counts.csv"), newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "cells"] + class_names + [f"{c} %" for c in class_names])
        out.writerows(rows)
    return totals, len(rows)


def evaluate_dataset(model, dataset, out_dir, class_names, min_confidence, meta,
                     results_path=None, progress=True):
    """Score a model's detections (or a results JSON) on a WBCDataset; returns the summary."""
    from tqdm import tqdm
    from wbc.evaluate import evaluate, gts_from_dataset, load_coco_results
    from wbc.report import write_report
    # file_name "<Class>/<file>": LISC numbers its images per class folder (Neutrophil/1.bmp,
    # Basophil/1.bmp), so a bare file name would not say which image a report line means.
    gts = gts_from_dataset(dataset, tqdm(dataset.image_ids, desc="ground truth", unit="image",
                                         disable=not progress, file=sys.stderr))
    if results_path:
        preds = load_coco_results(results_path, gts)
    else:
        preds = []
        for gt in tqdm(gts, desc="detect", unit="image", disable=not progress, file=sys.stderr):
            r = model.detect([dataset.load_image(gt["image_id"])])[0]
            preds.append(dict(r, image_id=gt["image_id"]))
    metrics = evaluate(gts, preds, class_names, min_confidence=min_confidence)
    return write_report(metrics, gts, preds, class_names, out_dir, meta)
