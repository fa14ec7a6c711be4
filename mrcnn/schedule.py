"""Learning-rate schedules for MaskRCNN.train (our addition; Matterport keeps the rate fixed).

config.LEARNING_RATE_SCHEDULE = "constant" (Matterport) or "cosine" (half a cosine from the
rate given to train() down to 0 at the last step of that call's `epochs`), and
config.LEARNING_RATE_WARMUP_STEPS > 0 ramps linearly from 0 over the first steps of a run.
Steps are counted from epoch 0 of the run, so a resumed run continues the same curve.
The run's length can change while it trains (`set_total_steps`, used by `train
--time-budget`): the cosine then ends at the new last step.
"""
import math

import keras
import tensorflow as tf
from keras import ops


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Rate at optimizer iteration i (global step = first_step + i) for a run of total_steps.

    Units: steps (batches). `first_step` is where this call of train() starts (epoch * steps
    per epoch), so the curve is the same whether a run is trained in one go or resumed.
    `total_steps` is held in a variable, so a compiled training step sees set_total_steps().
    """

    def __init__(self, base_rate, kind="constant", warmup_steps=0, first_step=0,
                 total_steps=1):
        if kind not in ("constant", "cosine"):
            raise ValueError(f"LEARNING_RATE_SCHEDULE must be 'constant' or 'cosine', not {kind!r}")
        self.base_rate = float(base_rate)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.first_step = int(first_step)
        self._total_steps = tf.Variable(float(max(int(total_steps), 1)), trainable=False,
                                        dtype=tf.float32, name="total_steps")

    @property
    def total_steps(self):
        return int(self._total_steps.numpy())

    def set_total_steps(self, total_steps):
        """End the cosine at `total_steps` (global steps) from the next step on."""
        self._total_steps.assign(float(max(int(total_steps), 1)))

    def __call__(self, iteration):
        step = ops.cast(iteration, "float32") + self.first_step
        rate = ops.convert_to_tensor(self.base_rate, "float32")
        if self.kind == "cosine":
            progress = ops.minimum(step / self._total_steps, 1.0)
            rate = rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps > 0:
            rate = rate * ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
        return rate

    def get_config(self):
        return {"base_rate": self.base_rate, "kind": self.kind,
                "warmup_steps": self.warmup_steps, "first_step": self.first_step,
                "total_steps": self.total_steps}


def learning_rate(config, base_rate, first_step, total_steps):
    """A float (constant, no warm-up: Matterport's behaviour) or a WarmupSchedule."""
    kind = getattr(config, "LEARNING_RATE_SCHEDULE", "constant")
    warmup = getattr(config, "LEARNING_RATE_WARMUP_STEPS", 0)
    if kind == "constant" and not warmup:
        return float(base_rate)
    return WarmupSchedule(base_rate, kind, warmup, first_step, total_steps)
