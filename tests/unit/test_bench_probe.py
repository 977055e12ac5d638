"""The bench's API CPU figure: the processes that serve the port, not the one that hands them
its socket (``signup up``'s own process, which also runs the embedded SMTP sink)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.probe import CpuMeter

# A child that inherits the listening socket, spends ``seconds`` of CPU, then waits.
_SERVER = """
import sys, time
sock = int(sys.argv[1])
spent = float(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
end = time.process_time() + spent
while time.process_time() < end:
    pass
print("done", flush=True)
time.sleep(60)
"""


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@contextmanager
def _servers_sharing(
    listener: socket.socket, count: int, spend: float
) -> Iterator[list[subprocess.Popen[str]]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(listener.fileno()), str(spend)],
            pass_fds=(listener.fileno(),),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield children
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_the_api_cpu_is_the_serving_processes_not_the_supervisor_that_holds_their_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with _servers_sharing(listener, 2, spend=0.2) as children:
            meter = CpuMeter(url, generator_pids=[])
            meter.begin()
            for child in children:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            # The supervisor (this process) is busier than both servers together.
            _burn(1.0)
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "done"
            measured = meter.end()

    assert measured["api_processes"] == 2
    api_cpu = measured["api_cpu_s"]
    assert isinstance(api_cpu, float)
    # The two servers' 0.4 s, without this process's 1 s.
    assert 0.3 <= api_cpu < 0.9, measured


def test_a_single_process_serving_its_own_socket_is_the_api() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        meter = CpuMeter(f"http://127.0.0.1:{listener.getsockname()[1]}", generator_pids=[])
        meter.begin()
        _burn(0.3)
        measured = meter.end()

    assert measured["api_processes"] == 1
    api_cpu = measured["api_cpu_s"]
    assert isinstance(api_cpu, float) and api_cpu >= 0.25, measured
