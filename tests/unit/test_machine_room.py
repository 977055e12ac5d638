"""Background work's turn: it rests while the kernel says tasks wait for the cores, and
never for longer than its longest rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

from infrastructure.priority import MachineRoom, cpu_stall_us

PRESSURE_LINES = (
    "some avg10=61.20 avg60=40.02 avg300=12.50 total=987654321\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


def test_the_time_tasks_waited_for_a_cpu_is_read_from_the_kernels_pressure_file(
    tmp_path: Path,
) -> None:
    pressure = tmp_path / "cpu"
    pressure.write_text(PRESSURE_LINES)
    assert cpu_stall_us(pressure) == 987_654_321


def test_a_machine_that_does_not_tell_its_pressure_gives_no_figure(tmp_path: Path) -> None:
    assert cpu_stall_us(tmp_path / "absent") is None
    garbled = tmp_path / "garbled"
    garbled.write_text("some avg10=1.00\n")
    assert cpu_stall_us(garbled) is None


class Machine:
    """A clock and a kernel's stall count: ``crowding`` is the share of time some task waits
    for a CPU while the background work runs a batch; ``during_rests`` the same for each of
    its rests in turn (the last one repeated)."""

    def __init__(self, crowding: float, during_rests: list[float] | None = None) -> None:
        self.now = 0.0
        self.stall = 0
        self.crowding = crowding
        self.during_rests = during_rests or [crowding]
        self.rests: list[float] = []

    def advance(self, seconds: float, crowding: float) -> None:
        self.now += seconds
        self.stall += round(seconds * crowding * 1e6)

    def batch(self, seconds: float = 0.2) -> None:
        self.advance(seconds, self.crowding)

    async def rest(self, stop: asyncio.Event, seconds: float) -> None:
        crowding = self.during_rests[min(len(self.rests), len(self.during_rests) - 1)]
        self.rests.append(seconds)
        self.advance(seconds, crowding)

    def room(self, *, tells: bool = True) -> MachineRoom:
        return MachineRoom(
            stall=(lambda: self.stall) if tells else (lambda: None),
            clock=lambda: self.now,
            rest=self.rest,
        )


async def _after_a_batch(machine: Machine, room: MachineRoom, stop: asyncio.Event) -> None:
    await room.wait(stop)  # the first look: nothing measured before it
    machine.batch()
    await room.wait(stop)


async def test_background_work_goes_on_at_once_when_the_cores_had_room_during_its_batch() -> None:
    machine = Machine(crowding=0.2)
    await _after_a_batch(machine, machine.room(), asyncio.Event())
    assert machine.rests == []


async def test_background_work_rests_while_tasks_wait_for_the_cores_until_a_rest_finds_room() -> (
    None
):
    machine = Machine(crowding=0.9, during_rests=[0.9, 0.8, 0.1])
    await _after_a_batch(machine, machine.room(), asyncio.Event())
    assert machine.rests == [0.25, 0.5, 1.0]


async def test_on_cores_that_stay_saturated_background_work_goes_on_after_its_longest_rest() -> (
    None
):
    machine = Machine(crowding=1.0)
    await _after_a_batch(machine, machine.room(), asyncio.Event())
    assert machine.rests == [0.25, 0.5, 1.0, 2.0, 0.25]
    assert sum(machine.rests) == MachineRoom().longest


async def test_where_the_kernel_tells_no_pressure_background_work_never_rests() -> None:
    machine = Machine(crowding=1.0)
    await _after_a_batch(machine, machine.room(tells=False), asyncio.Event())
    assert machine.rests == []


async def test_a_stopped_process_does_not_rest_before_it_stops() -> None:
    machine = Machine(crowding=1.0)
    stop = asyncio.Event()
    stop.set()
    await _after_a_batch(machine, machine.room(), stop)
    assert machine.rests == []


async def test_each_batch_is_judged_by_the_time_since_the_last_look_not_since_the_start() -> None:
    machine = Machine(crowding=1.0, during_rests=[0.0])
    room = machine.room()
    stop = asyncio.Event()
    await room.wait(stop)
    machine.advance(60.0, 0.0)  # a quiet minute, then a crowded batch
    await room.wait(stop)
    machine.batch()
    await room.wait(stop)
    assert machine.rests == [0.25]
