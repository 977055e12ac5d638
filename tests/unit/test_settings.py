"""Settings come from the environment, and the README documents every one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infrastructure.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


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
