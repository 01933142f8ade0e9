"""The settings of the reconcile traces' tail sampling, and the id generator that
gives a reconcile's span the ids it had while it ran."""

import random

import pytest
from opentelemetry.sdk.trace import TracerProvider

from wukong.tracing.sampling import TailSampling, sampled_by_ratio
from wukong.tracing.spans import PresetIds, ReconcileTracer


def test_the_operators_settings_come_from_the_environment() -> None:
    assert TailSampling.from_environ({}) == TailSampling(keep_ratio=0.1, slow_share=0.5)
    assert TailSampling.from_environ(
        {"WUKONG_TRACES_KEEP_RATIO": "0.25", "WUKONG_TRACES_SLOW_SHARE": "0.8"}
    ) == TailSampling(keep_ratio=0.25, slow_share=0.8)
    with pytest.raises(ValueError, match="between 0 and 1"):
        TailSampling.from_environ({"WUKONG_TRACES_KEEP_RATIO": "1.5"})


def test_slow_is_a_share_of_the_budget() -> None:
    sampling = TailSampling(slow_share=0.5)
    assert sampling.is_slow(5.1, 10.0)
    assert not sampling.is_slow(4.9, 10.0)


def test_the_ratio_keeps_its_share_of_random_trace_ids() -> None:
    ids = random.Random(7)
    for ratio in (0.0, 0.1, 0.5, 1.0):
        bound = TailSampling(keep_ratio=ratio).bound
        kept = sum(sampled_by_ratio(ids.getrandbits(128), bound) for _ in range(20_000))
        assert kept == pytest.approx(ratio * 20_000, abs=400)  # > 6 standard deviations


def test_preset_ids_are_handed_out_once_then_the_wrapped_generators() -> None:
    ids = PresetIds()
    ids.preset(0xABC, 0x123)
    assert (ids.generate_trace_id(), ids.generate_span_id()) == (0xABC, 0x123)
    assert ids.generate_trace_id() not in (0, 0xABC)
    assert ids.generate_span_id() not in (0, 0x123)


def test_the_tracer_wraps_a_providers_own_generator() -> None:
    provider = TracerProvider()
    own = provider.id_generator
    ReconcileTracer(provider=provider)
    assert isinstance(provider.id_generator, PresetIds)
    assert provider.id_generator.fallback is own
