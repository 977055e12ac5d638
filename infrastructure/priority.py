"""Work that must give the cores away the moment anything else wants them: `signup up`'s
mail (its sender and the sink that stands in for a relay), beside the API on one machine.

Niceness alone did not do it. At nice 10, even 19, a busy mailer keeps a core until its slice
ends, and an API process woken meanwhile waits: in a closed loop that wait is throughput
lost. Once a message cost half as much (0.8 ms), the mailer sent 2.2 to 2.7 times as many during
a c64 run and `signup up` accepted 4 to 10 % fewer (interleaved pairs). ``SCHED_IDLE`` (Linux) is
preempted at once by any ordinary task that wakes and runs in the machine's gaps: the same
runs then accepted as many as before while sending 2.2 times as many messages. Under a load
that never leaves a gap it would all but stop; a signup peak leaves gaps (the mailer sent
~145 messages a second through a saturated c64 run).
"""

from __future__ import annotations

import contextlib
import os

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
