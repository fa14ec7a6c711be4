"""Telling a diverged training run from a noisy one (wbc/divergence.py), the curves.png mark
and the warning train prints (WBC.EpochReview)."""
import csv
import math
import types

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

import WBC  # noqa: E402
from wbc import report as rp  # noqa: E402
from wbc.divergence import divergence_message, find_divergence  # noqa: E402

# Measured training losses (losses.csv `loss`), docs/zheng_experiments.md: I320 collapsed in
# epoch 10 at 320 px; R1 is the recipe at 256 px, a healthy run (its first 30 epochs).
I320 = [5.01, 3.40, 2.63, 2.29, 1.92, 1.95, 2.25, 1.99, 2.03, 2.78, 2.63, 2.89, 2.69, 2.66,
        2.59, 2.47, 2.58, 2.51, 2.66, 2.57, 2.23, 2.57, 2.51, 2.51, 2.56]
R1 = [4.29, 3.11, 2.42, 2.32, 2.08, 2.49, 2.18, 2.03, 2.21, 2.14, 1.88, 1.90, 2.22, 2.07, 1.55,
      1.46, 1.57, 1.40, 1.50, 1.48, 1.45, 1.32, 1.37, 1.26, 1.28, 1.21, 1.16, 1.25, 1.16, 1.15]


def epochs(losses):
    return list(range(1, len(losses) + 1))


def test_a_lasting_jump_is_found_once_five_epochs_confirm_it():
    found = find_divergence(epochs(I320), I320)
    assert (found.best_epoch, found.best, found.jump_epoch, found.jump) == (5, 1.92, 10, 2.78)
    assert found.confirmed_epoch == 15
    assert found.level == pytest.approx(1.1 * 1.92)
    assert find_divergence(epochs(I320[:14]), I320[:14]) is None
    assert find_divergence(epochs(I320[:15]), I320[:15]).jump_epoch == 10


def test_a_healthy_run_and_a_wobble_that_comes_back_are_not_divergence():
    assert find_divergence(epochs(R1), R1) is None
    wobble = [3.0, 2.0, 2.8, 2.7, 2.6, 2.5, 2.1, 2.0, 1.9, 1.8]    # back under 2.2 in epoch 7
    assert find_divergence(epochs(wobble), wobble) is None
    assert find_divergence(epochs(wobble[:6] + [2.3] * 4), wobble[:6] + [2.3] * 4) is not None


def test_empty_cells_are_left_out():
    gappy = I320[:12] + [math.nan] + I320[12:]
    found = find_divergence(epochs(gappy), gappy)
    assert (found.jump_epoch, found.jump, found.confirmed_epoch) == (10, 2.78, 16)


def test_the_message_says_what_happened_and_what_to_do():
    text = divergence_message(find_divergence(epochs(I320), I320), 0.005)
    for part in ["1.92", "epoch 5", "2.78 in epoch 10", "above 2.11", "5 epochs since",
                 "--lr=0.0025", "this run: 0.005", "Ctrl-C"]:
        assert part in text, part


def test_the_total_loss_panel_marks_the_jump():
    ax = Figure().subplots()
    rp._mark_divergence(ax, epochs(I320), I320)
    (vline, hline) = ax.get_lines()
    assert list(vline.get_xdata()) == [10, 10]
    assert list(hline.get_ydata()) == pytest.approx([2.112, 2.112])
    healthy = Figure().subplots()
    rp._mark_divergence(healthy, epochs(R1), R1)
    assert healthy.get_lines() == []


def write_losses(path, losses):
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["epoch", "loss", "lr"])
        out.writerows([e, v, 0.005] for e, v in zip(epochs(losses), losses))


# a run resumed after epoch 15 was warned before it stopped, and is not warned again
@pytest.mark.parametrize("start_epoch, warned_at", [(0, 15), (14, 15), (15, None)])
def test_train_warns_once_after_the_epoch_that_confirms_it(tmp_path, capsys, start_epoch,
                                                           warned_at):
    run = types.SimpleNamespace(log_dir=str(tmp_path), epoch=start_epoch)
    review = WBC.EpochReview(run, 0.005)
    warnings = []
    for n in range(max(start_epoch + 1, 10), len(I320) + 1):   # none before 10: see above
        write_losses(tmp_path / "losses.csv", I320[:n])
        review.on_epoch_end(n - 1)
        if capsys.readouterr().err:
            warnings.append(n)
    assert (tmp_path / "curves.png").is_file()
    assert warnings == ([warned_at] if warned_at else [])
    assert (review.warning is not None) == bool(warned_at)
