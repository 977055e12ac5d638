import subprocess
import sys
from pathlib import Path

import pytest

from infrastructure.embedded import local_reservation_key
from infrastructure.settings import DEVELOPMENT_RESERVATION_KEY, Settings
from tests.servers import ROOT


def test_the_development_key_an_empty_key_and_a_short_key_are_refused() -> None:
    for key in (DEVELOPMENT_RESERVATION_KEY, "", "short-but-not-empty"):
        problem = Settings(reservation_key=key).secrets_problem()
        assert problem is not None and "SIGNUP_RESERVATION_KEY" in problem, key


def test_a_long_secret_key_is_accepted() -> None:
    assert Settings(reservation_key="k" * 32).secrets_problem() is None


# Every command the README names as refusing: the API, `signup up` against a configured
# database, a worker or mailer on its own, and the operator's commands.
@pytest.mark.parametrize(
    "command",
    [
        ["api", "--port", "1"],
        ["up", "--port", "1"],
        ["worker"],
        ["mailer", "--shard", "0"],
        ["migrate"],
        ["erase", "someone@example.com"],
        ["dead-letters", "list"],
        ["projections", "status"],
    ],
    ids=lambda command: command[0],
)
def test_the_api_and_the_operators_commands_refuse_to_start_with_the_default_key(
    command: list[str],
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SIGNUP_RESERVATION_KEY" in done.stderr


def test_a_new_laptop_data_dir_gets_a_secret_key_of_its_own_kept_across_runs(
    tmp_path: Path,
) -> None:
    first = local_reservation_key(tmp_path / "a")
    assert Settings(reservation_key=first).secrets_problem() is None
    assert local_reservation_key(tmp_path / "a") == first
    assert local_reservation_key(tmp_path / "b") != first


def test_a_data_dir_written_with_the_development_key_keeps_it(tmp_path: Path) -> None:
    # Its claims were computed with that key: another would let each value be claimed twice.
    (tmp_path / "postgres").mkdir()
    assert local_reservation_key(tmp_path) == DEVELOPMENT_RESERVATION_KEY
