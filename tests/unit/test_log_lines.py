"""JSON log lines are written whole, soon, and all of them, each stamped as structlog would."""

from __future__ import annotations

import asyncio
import datetime
import io
import json

from hypothesis import given
from hypothesis import strategies as st

from infrastructure.logging import FLUSH_EVERY_SECONDS, LineBuffer, timestamp


def test_lines_logged_outside_an_event_loop_are_written_at_once() -> None:
    stream = io.BytesIO()
    LineBuffer(stream).msg(b'{"event":"migrated"}')
    assert stream.getvalue() == b'{"event":"migrated"}\n'


async def test_lines_logged_on_the_event_loop_are_written_together_within_the_flush_interval() -> (
    None
):
    stream = io.BytesIO()
    lines = LineBuffer(stream)
    for n in range(3):
        lines.msg(json.dumps({"event": "request", "n": n}).encode())
    assert stream.getvalue() == b""  # not one write per line
    # One timer, set by the first line to fire within the interval, writes them all.
    timer = lines._timer
    assert timer is not None
    assert timer.when() - asyncio.get_running_loop().time() <= FLUSH_EVERY_SECONDS

    await _written(stream, lines=3)

    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["n"] for line in written] == [0, 1, 2]


async def _written(stream: io.BytesIO, lines: int) -> None:
    """Until ``lines`` lines are in the stream: only a timer on this loop can write them."""
    for _ in range(1000):
        if stream.getvalue().count(b"\n") >= lines:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{stream.getvalue()!r}: not {lines} lines after 1,000 turns of 10 ms")


def test_lines_still_waiting_are_written_when_asked_to_flush() -> None:
    async def log_and_leave(lines: LineBuffer) -> None:
        lines.msg(b'{"event":"stopped"}')

    stream = io.BytesIO()
    lines = LineBuffer(stream)
    asyncio.run(log_and_leave(lines))  # the loop ends before its timer fires
    lines.flush()  # what the process does at exit
    assert stream.getvalue() == b'{"event":"stopped"}\n'


def test_a_line_logged_after_its_loop_ended_is_not_stranded() -> None:
    async def log_and_leave(lines: LineBuffer) -> None:
        lines.msg(b"first")

    async def log_and_wait(lines: LineBuffer) -> None:
        lines.msg(b"second")
        await _written(stream, lines=2)  # only a timer set on this loop can write them

    stream = io.BytesIO()
    lines = LineBuffer(stream)
    asyncio.run(log_and_leave(lines))  # the loop ends before its timer fires
    asyncio.run(log_and_wait(lines))  # a new loop: its own timer writes both lines
    assert stream.getvalue() == b"first\nsecond\n"


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999_999))
def test_a_lines_timestamp_reads_as_structlogs_iso_utc_stamp_would(now_ns: int) -> None:
    moment = datetime.datetime.fromtimestamp(now_ns // 10**9, tz=datetime.UTC).replace(
        microsecond=now_ns % 10**9 // 1000
    )

    assert timestamp(now_ns) == moment.isoformat().replace("+00:00", "Z")


def test_timestamps_a_second_apart_each_name_their_own_second() -> None:
    first = 1_764_912_345 * 10**9 + 999_999_000
    assert timestamp(first) == "2025-12-05T05:25:45.999999Z"
    assert timestamp(first + 1_000) == "2025-12-05T05:25:46Z"
    assert timestamp(first + 2_000) == "2025-12-05T05:25:46.000001Z"
