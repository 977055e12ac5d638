"""Work that must give the cores away the moment anything else wants them: `signup up`'s
mail (its sender and the sink that stands in for a relay), beside the API on one machine.

Niceness alone did not do it. At nice 10, even 19, a busy mailer keeps a core until its slice
ends, and an API process woken meanwhile waits: in a closed loop that wait is throughput
lost. Once a message cost half as much (0.8 ms), the mailer sent 2.2 to 2.7 times as many during
a c64 run and `signup up` accepted 4 to 10 % fewer (interleaved pairs). ``SCHED_IDLE`` (Linux) is
preempted at once by any ordinary task that wakes and runs in the machine's gaps: the same
runs then accepted as many as before while sending 2.2 times as many messages. Under a load
that never leaves a gap it would all but stop; a signup peak leaves gaps (the mailer sent
~145 messages a second through a saturated c64 run). Those gaps were not free either:
:class:`MachineRoom` is the rest that keeps the mail out of them while the cores are saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from infrastructure.stopping import sleep_unless_stopped

# Where SCHED_IDLE does not exist (macOS), or is not allowed: a busy API or worker process
# weighs ~9 times a task at nice 10 with the kernel (at 19, ~68 times).
BACKGROUND_NICENESS = 10


def make_background(task: int = 0) -> None:
    """``task``: a process id (its main thread, whose policy the threads it starts inherit)
    or, on Linux, a thread's native id; 0 for the calling thread."""
    with contextlib.suppress(OSError):  # it exited, or this is not allowed here
        os.setpriority(os.PRIO_PROCESS, task, BACKGROUND_NICENESS)
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is not None:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(task, idle, os.sched_param(0))


# Where the kernel tells how long tasks waited for a CPU (pressure stall information, Linux
# 4.20 and later); its first line reads "some avg10=… avg60=… avg300=… total=<microseconds>".
CPU_PRESSURE = Path("/proc/pressure/cpu")


def cpu_stall_us(path: Path = CPU_PRESSURE) -> int | None:
    """Microseconds, since boot, during which some task waited for a CPU; None where the
    kernel does not tell (not Linux, pressure accounting off, a container that hides it)."""
    try:
        with path.open("rb") as pressure:
            some = pressure.readline()
        return int(some.rsplit(b"total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class MachineRoom:
    """Whether the machine has room for background work, asked between its batches.

    ``SCHED_IDLE`` alone did not keep the mail off a peak's back. A background task is put
    off the CPU the moment a foreground one wakes, but not for free: two CPU burners at
    ``SCHED_IDLE`` cost a c64 bench of ``signup up`` 8 to 11 % of its accepted signups (and
    the bare endpoint as much) on the two-core virtual machine, and the mail in the gaps
    cost it ~7 % (interleaved runs: 3,025 accepted/s against 3,227 with the mail stopped;
    3,158 and 2,892 against 3,393 and 3,112 with these rests, which send ~60 messages a
    second there instead of ~190). So background work also rests while the cores are
    saturated: when, during its last batch, some task waited for a CPU more than ``most``
    of the time (the kernel's count; ~60 % at 60 % of a c64 bench's capacity, 15-20 % while
    only the read side and the mail catch up, under 1 % idle), it rests, doubling from
    ``first_rest``, until a rest finds room, and goes on after ``longest`` whatever it
    finds, so that it never stops for good.
    """

    most: float = 0.5
    first_rest: float = 0.25
    longest: float = 4.0
    stall: Callable[[], int | None] = cpu_stall_us
    clock: Callable[[], float] = time.monotonic
    rest: Callable[[asyncio.Event, float], Awaitable[None]] = sleep_unless_stopped
    _since: tuple[float, int] | None = field(default=None, init=False)

    def _crowded(self) -> bool:
        """Whether the cores were crowded since the last look (None: not known, so no)."""
        stall, now = self.stall(), self.clock()
        if stall is None:
            return False
        before, self._since = self._since, (now, stall)
        if before is None or now <= before[0]:
            return False
        return (stall - before[1]) / 1e6 / (now - before[0]) > self.most

    async def wait(self, stop: asyncio.Event) -> None:
        """Return at once if the cores had room since the last call; else after the first
        rest that finds room, or ``longest`` seconds of rests, or ``stop``. The next batch is
        measured from the return: the loop's condition looks first, every time."""
        rest, rested = self.first_rest, 0.0
        while self._crowded() and rested < self.longest and not stop.is_set():
            rest = min(rest, self.longest - rested)
            await self.rest(stop, rest)
            rested += rest
            rest *= 2
