"""Matterport's optimizer, SGD with momentum and per-tensor gradient clipping, as one fused
TensorFlow kernel per weight tensor (our addition; the update is Keras' to float rounding).

For each trainable tensor w with gradient g, at learning rate lr (a float or a schedule of
the step):

    g <- g * clipnorm / max(||g||, clipnorm)      (when clipnorm is set; per tensor)
    m <- momentum * m - lr * g
    w <- w + m

which is keras.optimizers.SGD(lr, momentum, clipnorm=clipnorm). Keras 3 builds it from
separate element-wise operations, each a pass over memory, and the recipe's model has 20 M
weights: its update took 0.113 s per step on 2 cores of an AMD EPYC Zen 3, a fifth of the
step. TensorFlow's ResourceApplyKerasMomentum does the momentum update in one pass, and the
clipping factor is folded into the rate passed to it (lr * factor), so clipping costs one
norm per tensor: 0.044 s (bench/README.md, "The recipe's step without bfloat16").
"""
import tensorflow as tf


class MomentumSGD:
    """apply_gradients([(g, w), ...]) as keras.optimizers.SGD(learning_rate, momentum,
    clipnorm=clipnorm). `learning_rate`: a float or a callable of the step (a Keras
    LearningRateSchedule). Momentum slots start at 0 on build() and are not saved in
    checkpoints (Matterport's weight files hold weights only)."""

    def __init__(self, learning_rate, momentum=0.9, clipnorm=None):
        self._rate = learning_rate
        self.momentum = float(momentum)
        self.clipnorm = float(clipnorm) if clipnorm else None
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots = {}

    @property
    def learning_rate(self):
        """The rate of the next step: a float32 scalar tensor."""
        rate = self._rate(self.iterations) if callable(self._rate) else self._rate
        return tf.cast(rate, tf.float32)

    def build(self, variables):
        """Create a zero momentum slot for each of `variables` (those not built yet)."""
        for w in variables:
            if id(w) not in self._slots:
                self._slots[id(w)] = tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False,
                                                 name="momentum")

    def apply_gradients(self, pairs):
        """One step for [(gradient, variable), ...]; every variable must have been built.
        A variable whose gradient is None is left as it is (as Keras does)."""
        rate = self.learning_rate
        for g, w in pairs:
            if g is None:
                continue
            g = tf.cast(tf.convert_to_tensor(g), w.dtype)
            lr = tf.cast(rate, w.dtype)
            if self.clipnorm is not None:
                norm = tf.norm(g)
                lr *= self.clipnorm / tf.maximum(norm, self.clipnorm)
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=w.handle, accum=self._slots[id(w)].handle, lr=lr, grad=g,
                momentum=tf.constant(self.momentum, w.dtype), use_nesterov=False)
        self.iterations.assign_add(1)
