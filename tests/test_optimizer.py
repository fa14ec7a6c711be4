"""MomentumSGD (mrcnn/optimizer.py) makes Keras' SGD(momentum, clipnorm) updates."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from mrcnn.optimizer import MomentumSGD
from mrcnn.schedule import WarmupSchedule


def gradient_steps(seed=0, steps=6):
    """Per step, gradients for a [4, 3] and a [5] tensor; steps 1 and 4 have norms far above
    the clip norm of 5, the others below it."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        size = 40. if step in (1, 4) else 0.3
        out.append([rng.normal(0, size, (4, 3)).astype(np.float32),
                    rng.normal(0, size, (5,)).astype(np.float32)])
    return out


def train(optimizer, steps, make_variable):
    weights = [make_variable(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)),
               make_variable(np.arange(5, dtype=np.float32))]
    optimizer.build(weights)
    rates = []

    @tf.function
    def step(grads):
        optimizer.apply_gradients(zip(grads, weights))

    for grads in steps:
        rates.append(float(optimizer.learning_rate))
        step([tf.constant(g) for g in grads])
    return [w.numpy() for w in weights], rates


@pytest.mark.parametrize("clipnorm", [5.0, None])
@pytest.mark.parametrize("scheduled", [False, True])
def test_updates_equal_keras_sgd_with_momentum_and_clipnorm(clipnorm, scheduled):
    steps = gradient_steps()
    rate = (lambda: WarmupSchedule(0.05, "cosine", warmup_steps=3, first_step=2,
                                   total_steps=10)) if scheduled else (lambda: 0.05)
    ours, our_rates = train(MomentumSGD(rate(), momentum=0.9, clipnorm=clipnorm), steps,
                            keras.Variable)
    theirs, their_rates = train(keras.optimizers.SGD(rate(), momentum=0.9, clipnorm=clipnorm),
                                steps, keras.Variable)
    start = [np.linspace(-1, 1, 12).reshape(4, 3), np.arange(5)]
    for a, b, w0 in zip(ours, theirs, start):
        assert not np.allclose(a, w0, atol=1e-3)            # the weights did move
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(our_rates, their_rates, rtol=1e-6)


def test_clipping_acts_on_each_tensor_alone():
    """A gradient of norm 50 moves its tensor by lr * 5 in norm on the first step; the other
    tensor's small gradient is not scaled down with it."""
    w_big, w_small = tf.Variable(tf.zeros([2])), tf.Variable(tf.zeros([2]))
    opt = MomentumSGD(0.1, momentum=0.9, clipnorm=5.0)
    opt.build([w_big, w_small])
    opt.apply_gradients([(tf.constant([30., 40.]), w_big), (tf.constant([0.3, 0.4]), w_small)])
    np.testing.assert_allclose(w_big.numpy(), [-0.3, -0.4], rtol=1e-6)
    np.testing.assert_allclose(w_small.numpy(), [-0.03, -0.04], rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1


def test_momentum_carries_over_between_steps():
    w = tf.Variable([1.])
    opt = MomentumSGD(0.5, momentum=0.9)
    opt.build([w])
    opt.apply_gradients([(tf.constant([1.]), w)])      # m = -0.5,  w = 0.5
    opt.apply_gradients([(tf.constant([0.]), w)])      # m = -0.45, w = 0.05
    np.testing.assert_allclose(w.numpy(), [0.05], atol=1e-7)


def test_a_none_gradient_leaves_its_variable_alone():
    w, frozen = tf.Variable([1.]), tf.Variable([2.])
    opt = MomentumSGD(0.5, momentum=0.9)
    opt.build([w, frozen])
    opt.apply_gradients([(tf.constant([1.]), w), (None, frozen)])
    assert w.numpy()[0] == 0.5 and frozen.numpy()[0] == 2.


def test_train_uses_the_configs_momentum_and_clip_norm(tmp_path):
    from conftest import TinyConfig
    from mrcnn import model as modellib

    class Tuned(TinyConfig):
        BACKBONE = "small"
        LEARNING_MOMENTUM = 0.8
        GRADIENT_CLIP_NORM = 2.0
    model = modellib.MaskRCNN("training", Tuned(), str(tmp_path))
    optimizer = model.make_optimizer(0.01)
    assert isinstance(optimizer, MomentumSGD)
    assert (optimizer.momentum, optimizer.clipnorm) == (0.8, 2.0)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
