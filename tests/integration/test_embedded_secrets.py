"""`signup up`'s embedded mode makes its own secrets: a real reservation key on a fresh data dir."""

from __future__ import annotations

from pathlib import Path

from infrastructure.settings import Settings
from interfaces.cli import _servers


def test_signup_up_on_a_fresh_data_dir_serves_with_a_secret_key_and_keeps_it(
    tmp_path: Path,
) -> None:
    with _servers(Settings(), tmp_path, redis=False) as running:
        first = running.reservation_key
    assert Settings(reservation_key=first).secrets_problem() is None
    with _servers(Settings(), tmp_path, redis=False) as running:
        assert running.reservation_key == first
