"""Tell a diverged training run from a noisy one, from its per-epoch training losses.

A run that diverges (the learning rate too high for its image size, batch or data) shows a
lasting jump: the mean training loss of one epoch rises well above the lowest mean before it
and never settles back near that low. A healthy run's losses wobble too (up by 20% for an
epoch or two, early on), but they come back within a few epochs. I320 in
docs/zheng_experiments.md is the case this was fitted to: 1.92 at epoch 5, 2.78 at epoch 10,
then 2.2-2.9 for all 65 epochs left; R1, the recipe's run whose losses are kept, rose at
most 20% above its low (2.49 at epoch 6, its low then 2.08) and came back two epochs later.
"""
import math
from collections import namedtuple

#: A jump of the loss to at least RISE x its lowest before ...
RISE = 1.25
#: ... after which PATIENCE epochs in a row stay above SETTLE x that lowest.
SETTLE = 1.10
PATIENCE = 5

Divergence = namedtuple("Divergence",
                        "best_epoch best jump_epoch jump level patience confirmed_epoch")
Divergence.__doc__ = """A lasting jump of the training loss.
best_epoch, best: the lowest loss before the jump and its epoch; jump_epoch, jump: the first
epoch at or above RISE x best, and its loss; level: SETTLE x best, above which every one of
the `patience` epochs after the jump stayed, the last of them confirmed_epoch."""


def find_divergence(epochs, losses, rise=RISE, settle=SETTLE, patience=PATIENCE):
    """The first lasting jump in a run's training losses, or None.

    epochs, losses: sequences of equal length, one mean training loss per epoch, in order
    (losses.csv's `epoch` and `loss` columns). Epochs whose loss is not a finite number
    (an empty cell) are left out. A jump counts only once `patience` epochs after it are
    known, so a warning comes `patience` epochs after the jump at the earliest.
    """
    points = [(e, float(v)) for e, v in zip(epochs, losses) if math.isfinite(float(v))]
    for j in range(1, len(points) - patience):
        best_epoch, best = min(points[:j], key=lambda p: p[1])
        jump_epoch, jump = points[j]
        after = [v for _, v in points[j + 1:j + 1 + patience]]
        if jump >= rise * best and all(v > settle * best for v in after):
            return Divergence(best_epoch, best, jump_epoch, jump, settle * best, patience,
                              points[j + patience][0])
    return None


def divergence_message(found, learning_rate):
    """The warning train prints for a Divergence `found` in a run at `learning_rate`."""
    return (f"warning: the training loss jumped from {found.best:.3g} (its lowest, epoch "
            f"{found.best_epoch:g}) to {found.jump:.3g} in epoch {found.jump_epoch:g} and has "
            f"stayed above {found.level:.3g} in the {found.patience} epochs since: the run has "
            "most likely diverged, and more epochs seldom bring it back (curves.png shows the "
            "jump). Stop it (Ctrl-C saves a checkpoint) and train again with a lower learning "
            f"rate, e.g. --lr={learning_rate / 2:g} (this run: {learning_rate:g})")
