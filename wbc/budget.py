"""Fit a training run's length to a time budget (`train --time-budget`).

The run starts out to train the epochs asked for (--epochs, the most it may train). After
each epoch the number of epochs that still fit before the deadline is worked out from the
epochs timed so far, and the run's last epoch moves there (to --epochs at most); a cosine
learning rate is stretched or squeezed with it, so it still reaches 0 at the run's end
(MaskRCNN.set_last_epoch).
"""
import statistics

#: An epoch counts as fitting only with this much to spare: epochs of one run vary by up to
#: about 15% around their mean (B2h in docs/zheng_experiments.md: 223-296 s on a Zen 1), and an
#: epoch planned without a margin that then does not fit ends the run above a rate of 0 (B2h
#: planned 28 epochs with 13.2 min left at 255 s each, and stopped after 27).
MARGIN = 1.1


def typical_epoch_seconds(durations):
    """Wall-clock seconds one more epoch is expected to take, from `durations` [s] of the
    epochs this process has trained so far (training, validation, checkpoint, curves): their
    mean without the first, which also traces and compiles the training step, unless the
    first is all there is (then an overestimate, which errs on the side of the deadline)."""
    if not durations:
        raise ValueError("typical_epoch_seconds needs at least one epoch's duration")
    return statistics.fmean(durations[1:] if len(durations) > 1 else durations)


def epochs_that_fit(epochs_done, durations, seconds_left):
    """The last epoch (absolute) a run can reach before its deadline, --epochs aside.

    epochs_done: the run's epochs so far (absolute, a resumed run counts its earlier ones);
    durations: seconds of each epoch this process trained; seconds_left: until the deadline.
    Returns epochs_done plus the whole epochs of typical length, with MARGIN to spare, that
    fit in seconds_left (none when it is near or past)."""
    more = int(max(seconds_left, 0.0) // (typical_epoch_seconds(durations) * MARGIN))
    return epochs_done + more
