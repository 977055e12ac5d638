"""Settings come from the environment, and the README documents every one of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infrastructure.settings import InvalidSetting, Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


class _Recording(dict[str, str]):
    """An empty environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def test_every_setting_read_from_the_environment_is_in_the_readme_table() -> None:
    environment = _Recording()
    Settings.from_env(environment)
    table = README.read_text()

    undocumented = sorted(name for name in environment.asked if f"| `{name}` |" not in table)

    assert len(environment.asked) >= 20
    assert undocumented == []


def test_an_empty_rate_turns_a_limit_off_and_lists_are_split_on_commas() -> None:
    settings = Settings.from_env(
        {
            "SIGNUP_RATE_LIMIT_PER_CLIENT": "",
            "SHARD_DATABASE_URLS": "postgresql://a/x, postgresql://b/y",
            "SIGNUP_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.1",
        }
    )
    assert settings.rate_limit_per_client == ""
    assert settings.shard_urls == ("postgresql://a/x", "postgresql://b/y")
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("SIGNUP_BATCH_MAX_SIZE", "abc", "SIGNUP_BATCH_MAX_SIZE must be a whole number, not 'abc'"),
        ("SIGNUP_APPEND_CONCURRENCY", "0", "SIGNUP_APPEND_CONCURRENCY must be 1 or more, not '0'"),
        ("SIGNUP_DB_POOL_SIZE", "-2", "SIGNUP_DB_POOL_SIZE must be 1 or more, not '-2'"),
        ("SIGNUP_STATUS_CACHE_SECONDS", "0", "SIGNUP_STATUS_CACHE_SECONDS must be 1 or more"),
        ("SIGNUP_BATCH_MAX_WAIT_MS", "fast", "SIGNUP_BATCH_MAX_WAIT_MS must be a number"),
        ("SIGNUP_RETRY_BASE_SECONDS", "nan", "SIGNUP_RETRY_BASE_SECONDS must be 0 or more"),
        ("SIGNUP_APPEND_TIMEOUT_SECONDS", "0", "SIGNUP_APPEND_TIMEOUT_SECONDS must be more than 0"),
        ("SIGNUP_REDIS_TIMEOUT_SECONDS", "0", "SIGNUP_REDIS_TIMEOUT_SECONDS must be more than 0"),
        ("SIGNUP_WORKER_METRICS_PORT", "70000", "must be from 1 to 65535, not '70000'"),
        ("SIGNUP_MAIL_SHARDS", "0", "SIGNUP_MAIL_SHARDS must be 1 or more, not '0'"),
        (
            "SIGNUP_VERIFICATION_TTL",
            "2x",
            'SIGNUP_VERIFICATION_TTL must be a duration such as "90s"',
        ),
        ("SIGNUP_VERIFICATION_RESEND_INTERVAL", "-1m", "must be a duration of zero or more"),
    ],
)
def test_a_setting_the_service_cannot_run_with_is_refused_naming_its_variable(
    variable: str, value: str, said: str
) -> None:
    with pytest.raises(InvalidSetting) as refused:
        Settings.from_env({variable: value})
    assert said in str(refused.value)


def test_numbers_and_durations_are_read_as_written_and_an_empty_one_means_its_default() -> None:
    settings = Settings.from_env(
        {
            "SIGNUP_BATCH_MAX_SIZE": " 250 ",
            "SIGNUP_BATCH_MAX_WAIT_MS": "0.5",
            "SIGNUP_WORKER_METRICS_PORT": "9100",
            "SIGNUP_VERIFICATION_TTL": "2d",
            "SIGNUP_APPEND_CONCURRENCY": "",
            "SIGNUP_REDIS_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert settings.batch_max_size == 250
    assert settings.batch_max_wait_ms == 0.5
    assert settings.worker_metrics_port == 9100
    assert settings.verification_ttl_seconds == 2 * 86400
    assert settings.append_concurrency == Settings().append_concurrency
    assert settings.redis_timeout_seconds == 2.5


def test_signup_refuses_to_start_with_one_line_naming_the_bad_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "migrate"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SIGNUP_APPEND_CONCURRENCY": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "signup: SIGNUP_APPEND_CONCURRENCY must be 1 or more, not '0'"
    ]
