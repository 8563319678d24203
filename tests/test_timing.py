"""bn_keras.testing.timing: interleaving order and the summary helpers (no timing asserted)."""

from bn_keras.testing import timing


def test_interleaved_calls_candidates_in_turn_and_drops_warmup_rounds():
    calls = []
    measures = {name: (lambda n=name: calls.append(n) or float(len(calls))) for name in "ab"}
    samples = timing.interleaved(measures, rounds=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert samples == {"a": [3.0, 5.0], "b": [4.0, 6.0]}
    assert timing.medians(samples) == {"a": 4.0, "b": 5.0}


def test_spread_formats_both_bounds():
    assert timing.spread([3.14159, 2.5, 10.0]) == "2.5-10"
    assert timing.spread([12450.0, 10325.4], ",.0f") == "10,325-12,450"
