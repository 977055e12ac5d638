"""How much memory the embedded PostgreSQL's buffer pool takes."""

from __future__ import annotations

from infrastructure.embedded import shared_buffers_mb

GB = 2**30


def test_the_buffer_pool_is_a_quarter_of_the_machines_memory() -> None:
    assert shared_buffers_mb(2 * GB) == 512
    assert shared_buffers_mb(3 * GB) == 768


def test_the_buffer_pool_is_never_below_postgres_default_nor_above_a_gigabyte() -> None:
    assert shared_buffers_mb(256 * 2**20) == 128
    assert shared_buffers_mb(24 * GB) == 1024
    # Memory unknown (not a POSIX system): PostgreSQL's own default.
    assert shared_buffers_mb(None) == 128
