"""Pruning to a measured speed-up: the bisection over FLOPs cuts, with a latency model
standing in for the clock (no timing assertions), and the latency meter itself."""

import numpy as np
import pytest
from models import residual_net

import kerasprune as kp
from kerasprune.costs import LatencyMeter
from kerasprune.pruning import SpeedupNotReachedError


def latency_model(fixed: float):
    """A model's 'time': a fixed cost plus one unit per million multiply-adds."""

    def latency(m):
        return fixed + kp.count_flops(m).total / 1e6

    def speedup(original, thin):
        return latency(original) / latency(thin)

    return speedup


def test_prune_for_speedup_finds_the_smallest_flops_cut_that_is_fast_enough():
    model = residual_net()
    before = [w.copy() for w in model.get_weights()]
    macs = kp.count_flops(model).total / 1e6
    fixed = 0.2 * macs  # a fifth of the time does not shrink with the widths
    measure = latency_model(fixed)
    result = kp.prune_for_speedup(model, 2.0, measure=measure, tolerance=0.01)
    assert result.speedup >= 2.0
    assert result.speedup == pytest.approx(measure(model, result.model))
    # the FLOPs cut needed is larger than 2x: the fixed part does not shrink
    assert result.flops_cut > 2.0
    assert result.flops_cut == pytest.approx(macs * 1e6 / kp.count_flops(result.model).total)
    assert result.efficiency == pytest.approx(result.speedup / result.flops_cut)
    # the bisection's bracket: a ratio at most `tolerance` below the result was too slow
    failed = [r for r, s in result.trials if s < 2.0]
    assert failed and result.ratio - max(failed) <= 0.01 + 1e-12
    assert all(s >= 2.0 for r, s in result.trials if r >= result.ratio)
    # the thin model is what kp.prune gives at that ratio of FLOPs
    direct = kp.prune(model, result.ratio, unit="flops")
    assert kp.count_flops(direct).total == kp.count_flops(result.model).total
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(direct.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # the model passed in is untouched
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_prune_for_speedup_says_what_it_reached_when_the_target_is_out_of_reach():
    model = residual_net()
    fixed = 2.0 * kp.count_flops(model).total / 1e6  # at most 1.5x, whatever is removed
    with pytest.raises(SpeedupNotReachedError, match=r"measured 1\.\d\dx faster, short of 2\.00x"):
        kp.prune_for_speedup(model, 2.0, measure=latency_model(fixed))
    with pytest.raises(ValueError, match="greater than 1"):
        kp.prune_for_speedup(model, 1.0, measure=latency_model(0.0))
    with pytest.raises(ValueError, match="max_ratio_flops"):
        kp.prune_for_speedup(model, 2.0, max_ratio_flops=1.0, measure=latency_model(0.0))


def test_latency_meter_times_models_interleaved_and_traces_each_once():
    model = residual_net()
    thin = kp.prune(model, 0.5, unit="flops")
    meter = LatencyMeter(batch_size=2, samples=2, min_seconds=0.01)
    times = meter.time([model, thin])
    assert len(times) == 2 and all(t > 0 for t in times)
    assert meter.speedup(model, thin) > 0
    assert len(meter._fns) == 2  # the original was not compiled a second time
    meter.forget(thin)
    assert len(meter._fns) == 1
    with pytest.raises(ValueError):
        LatencyMeter(samples=0)
