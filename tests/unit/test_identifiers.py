"""Registration ids: unguessable, issued in time order, never repeated by a forked child."""

from __future__ import annotations

import os
import time
import uuid

from application.identifiers import new_registration_id

# RFC 9562's UUIDv7: 48 bits of milliseconds, the version, 12 random bits, the variant, 62 more.
_RANDOM_BITS = [*range(64, 76), *range(0, 62)]


def _random_part(registration_id: uuid.UUID) -> int:
    value = registration_id.int
    return ((value >> 64) & 0xFFF) << 62 | value & ((1 << 62) - 1)


def test_an_id_is_a_version_7_uuid_stamped_with_the_time_it_was_issued() -> None:
    before = time.time_ns() // 1_000_000
    registration_id = new_registration_id()
    after = time.time_ns() // 1_000_000

    assert registration_id.version == 7
    assert registration_id.variant == uuid.RFC_4122
    assert before <= registration_id.int >> 80 <= after


def test_ids_issued_a_millisecond_apart_sort_in_the_order_they_were_issued() -> None:
    issued = []
    for _ in range(5):
        issued.append(new_registration_id())
        time.sleep(0.002)

    assert sorted(issued) == issued


def test_every_one_of_the_74_random_bits_varies_between_ids_of_the_same_millisecond() -> None:
    # Most of these 2,000 share a millisecond: a per-millisecond counter (as RFC 9562's
    # monotonic methods keep) would leave its high bits nearly constant and fail here.
    ids = [new_registration_id() for _ in range(2000)]

    assert len(set(ids)) == len(ids)
    randoms = [_random_part(registration_id) for registration_id in ids]
    for bit in range(74):
        ones = sum(random >> bit & 1 for random in randoms)
        # A fair bit lands outside 600..1400 of 2000 with odds below 1e-70.
        assert 600 < ones < 1400, f"random bit {bit} was set in {ones} of 2000 ids"


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_registration_id()  # the parent has drawn before the fork
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(writer, b"".join(new_registration_id().bytes for _ in range(8)))
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    drawn = os.read(reader, 1024)
    os.close(reader)
    childs = {_random_part(uuid.UUID(bytes=drawn[i : i + 16])) for i in range(0, len(drawn), 16)}
    parents = {_random_part(new_registration_id()) for _ in range(8)}

    assert len(childs) == 8
    assert not childs & parents
