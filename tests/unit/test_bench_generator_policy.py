"""The load generator's processes take the scheduling policy they are given."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from bench.generator import take_policy

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's"
)


def _policy_after(policy: str) -> tuple[bool, int]:
    """Taken in a process of its own: the test's process keeps its policy."""
    return take_policy(policy), os.sched_getscheduler(0)


def _in_a_process(policy: str) -> tuple[bool, int]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_policy_after, (policy,))


def test_a_generator_asked_for_batch_runs_under_sched_batch() -> None:
    assert _in_a_process("batch") == (True, os.SCHED_BATCH)


def test_a_generator_asked_for_normal_runs_as_it_was_started() -> None:
    assert _in_a_process("normal") == (False, os.sched_getscheduler(0))
