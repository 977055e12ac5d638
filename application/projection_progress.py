"""Whether the projections are moving: the read side's health, told from its lag.

A worker that died, hangs or cannot reach a read model leaves registrations ``pending`` while
every server still answers. What shows it is a projection with events waiting whose position
has not moved for a while: that one is stalled. A projection with nothing to do is never
stalled, however long it sits still.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Seen:
    position: int
    lag: int
    # When the projection was first seen at this position with events waiting (monotonic s).
    waiting_since: float


@dataclass
class ProjectionProgress:
    """Fed each projection's position and lag as they are read; ``stalled`` names those that
    have had events waiting, without moving, for ``stall_after`` seconds or more."""

    stall_after: float
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, projection: str, position: int, lag: int, now: float) -> None:
        seen = self._seen.get(projection)
        if seen is None or seen.position != position or seen.lag == 0:
            self._seen[projection] = _Seen(position, lag, now)
        else:
            seen.lag = lag

    def stalled(self, now: float) -> list[str]:
        return sorted(
            name
            for name, seen in self._seen.items()
            if seen.lag > 0 and now - seen.waiting_since >= self.stall_after
        )
