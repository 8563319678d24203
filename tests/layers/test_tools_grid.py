"""The BN tools' grid on TensorFlow (bn_keras.testing.tools_grid): fold, recalibrate (both
variance conventions) and freeze on every case, for our BN and Keras', against references
apart from the tools' code. JAX and PyTorch run the same grid in
tests/backends/backend_probe.py; experiments/validate_tools.py writes it as a report."""

import pytest

from bn_keras.testing import tools_grid

CASES = [(case, bn) for bn in tools_grid.BN_CLASSES for case in tools_grid.grid_for(bn)]

# 57 models folded, re-estimated twice and frozen: ~40 s; a grid, so CI's second stage
pytestmark = [pytest.mark.slow, pytest.mark.proof]


@pytest.mark.parametrize("case,bn", CASES, ids=[f"{bn}: {case.name}" for case, bn in CASES])
def test_every_tool_holds_on_the_case(case, bn):
    row = tools_grid.check(case, bn)
    assert row["passed"], row


def test_the_grid_covers_what_users_meet():
    names = {case.name for case in tools_grid.default_grid()}
    for needed in ("Conv1D", "Conv3D", "DepthwiseConv1D", "SeparableConv2D", "Dense on 3-D",
                   "channels_first, axis=-1 (mismatch)", "BN used twice",
                   "producer used twice", "mixed_bfloat16", "inputs x*100+1e3",
                   "Ghost BN, short last group", "Dense, a batch of 1"):
        assert needed in names


def test_under_a_mirrored_strategy_the_tools_match_one_device(mirrored_strategy):
    rows = tools_grid.check_under_strategy(mirrored_strategy).rows
    assert [r["bn"] for r in rows] == ["ours", "keras"]
    assert all(r["passed"] for r in rows), rows
