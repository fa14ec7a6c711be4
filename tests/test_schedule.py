"""Learning-rate schedules and weighted image sampling (our additions to train())."""
import numpy as np
import pytest

from mrcnn import schedule
from mrcnn.data import TrainingInput
from conftest import TinyConfig
from shapes import ShapesDataset


def rate(s, iteration):
    return float(s(iteration))


def test_cosine_with_warmup_ramps_then_falls_to_zero():
    s = schedule.WarmupSchedule(0.01, "cosine", warmup_steps=10, first_step=0, total_steps=100)
    assert rate(s, 0) == pytest.approx(0.001)                 # 1/10 of the way up
    assert rate(s, 9) == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 0.09)), rel=1e-5)
    assert rate(s, 50) == pytest.approx(0.005, rel=1e-5)      # half way down the cosine
    assert rate(s, 100) == pytest.approx(0.0, abs=1e-9)
    assert rate(s, 500) == pytest.approx(0.0, abs=1e-9)       # stays at the end value


def test_a_resumed_run_continues_the_same_curve():
    whole = schedule.WarmupSchedule(0.02, "cosine", 20, first_step=0, total_steps=300)
    resumed = schedule.WarmupSchedule(0.02, "cosine", 20, first_step=120, total_steps=300)
    for i in (0, 7, 100):
        assert rate(resumed, i) == pytest.approx(rate(whole, 120 + i), rel=1e-6)


def test_matterport_default_is_a_plain_constant_and_bad_names_fail():
    assert schedule.learning_rate(TinyConfig(), 0.003, 0, 100) == 0.003

    class Warm(TinyConfig):
        LEARNING_RATE_WARMUP_STEPS = 4
    warm = schedule.learning_rate(Warm(), 0.004, 0, 100)
    assert [round(rate(warm, i), 6) for i in range(5)] == [0.001, 0.002, 0.003, 0.004, 0.004]
    with pytest.raises(ValueError, match="LEARNING_RATE_SCHEDULE"):
        schedule.WarmupSchedule(0.1, "step")


def test_sample_weights_draw_images_in_proportion():
    data = ShapesDataset(4, 128, seed=0)
    stream = TrainingInput(data, TinyConfig(), seed=0, sample_weights=[0, 3, 1, 0])
    ids = stream._image_id_stream()
    drawn = np.array([next(ids) for _ in range(4000)])
    assert set(drawn) == {1, 2}
    assert np.mean(drawn == 1) == pytest.approx(0.75, abs=0.03)
    for bad in ([1, 1], [0, 0, 0, 0], [1, -1, 1, 1], [1, np.nan, 1, 1], [1, np.inf, 1, 1]):
        with pytest.raises(ValueError, match="sample_weights"):
            TrainingInput(data, TinyConfig(), sample_weights=bad)


def test_a_compiled_step_sees_the_run_made_shorter():
    import tensorflow as tf
    s = schedule.WarmupSchedule(0.01, "cosine", warmup_steps=0, first_step=0, total_steps=100)
    step_rate = tf.function(lambda i: s(i))
    assert float(step_rate(50)) == pytest.approx(0.005, rel=1e-5)
    s.set_total_steps(60)       # e.g. train --time-budget found that only 60 steps fit
    assert s.total_steps == 60 and s.get_config()["total_steps"] == 60
    assert float(step_rate(30)) == pytest.approx(0.005, rel=1e-5)
    assert float(step_rate(60)) == pytest.approx(0.0, abs=1e-9)
