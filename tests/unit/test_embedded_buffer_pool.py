"""How much memory the embedded PostgreSQL's buffer pool takes."""

from __future__ import annotations

from pathlib import Path

from infrastructure.embedded import _machine_memory, shared_buffers_mb

GB = 2**30


def test_the_buffer_pool_is_a_quarter_of_the_machines_memory() -> None:
    assert shared_buffers_mb(2 * GB) == 512
    assert shared_buffers_mb(3 * GB) == 768


def test_the_buffer_pool_is_never_below_postgres_default_nor_above_a_gigabyte() -> None:
    assert shared_buffers_mb(256 * 2**20) == 128
    assert shared_buffers_mb(24 * GB) == 1024
    # Memory unknown (not a POSIX system): PostgreSQL's own default.
    assert shared_buffers_mb(None) == 128


def test_a_containers_memory_limit_counts_as_the_machines_memory(tmp_path: Path) -> None:
    limited, unlimited, absent = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    limited.write_text(f"{2 * GB}\n")
    unlimited.write_text("max\n")

    assert _machine_memory((absent, limited)) == min(2 * GB, _machine_memory(()) or 0)
    assert _machine_memory((unlimited,)) == _machine_memory(())
    assert shared_buffers_mb(_machine_memory((limited,))) <= 512
