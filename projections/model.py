"""What a projection is: a name, a version, the event topics it reads, and a pure reducer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from domain.registration import UserRegistrationRequested

Row = Mapping[str, Any]

REGISTRATION_REQUESTED = get_topic(UserRegistrationRequested)


@dataclass(frozen=True, slots=True)
class Projection:
    """A read model's declaration.

    ``reduce`` turns one event into the rows it contributes (none when the event is not for
    this read model); it does no I/O, so a replay gives the same rows.
    """

    name: str
    version: int
    topics: Sequence[str]
    reduce: Callable[[UserRegistrationRequested], Sequence[Row]]

    @property
    def table_version(self) -> str:
        return f"{self.name}_v{self.version}"
