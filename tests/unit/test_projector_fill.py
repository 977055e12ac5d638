"""After a partial batch a projector waits for the next tick of its fill on the machine's
clock, so the projectors of a worker step together and the status projector once after them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.read_side.projector import until_next_fill

fills = st.sampled_from([0.05, 0.2, 1.0, 0.3])
# A moment within a fill period: its number, and how far into it (not at its very edges,
# where a float's last digit decides which period it is in).
periods = st.integers(0, 10**7)
within = st.floats(0.001, 0.999)


@given(fills, periods, within, within)
def test_projectors_that_finish_a_partial_batch_in_the_same_fill_period_step_again_together(
    fill: float, period: int, first: float, second: float
) -> None:
    one, other = (period + first) * fill, (period + second) * fill
    assert one + until_next_fill(fill, one) == pytest.approx(
        other + until_next_fill(fill, other), abs=1e-6
    )
    assert one + until_next_fill(fill, one) == pytest.approx((period + 1) * fill, abs=1e-6)


@given(fills, periods, within)
def test_a_projector_never_waits_longer_than_its_fill(
    fill: float, period: int, into: float
) -> None:
    assert 0 < until_next_fill(fill, (period + into) * fill) <= fill


def test_a_projector_without_a_fill_steps_again_at_once() -> None:
    assert until_next_fill(0, 12345.678) == 0
