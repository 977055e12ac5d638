"""A resent code's deadline in a database whose session time zone keeps daylight saving time."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import create_async_engine

from domain.verification import VerificationPolicy
from infrastructure.read_side.read_store import async_url
from infrastructure.settings import Settings
from infrastructure.verification.challenges import ChallengeIssuer, Verifications

NEW_YORK = ZoneInfo("America/New_York")


async def test_a_resent_code_lasts_its_hours_across_a_daylight_saving_change(
    settings: Settings,
) -> None:
    # The day before New York's clocks go forward (2027-03-14, 02:00): there, "now + 1 day"
    # is 23 hours later, while a code's lifetime is a span of seconds (24 h by default).
    # As a database whose ``timezone`` setting is a local one has every session.
    engine = create_async_engine(
        async_url(settings.read_url),
        connect_args={"server_settings": {"timezone": "America/New_York"}},
    )
    policy = VerificationPolicy(ttl=timedelta(days=7), resend_every=timedelta(seconds=0))
    now = datetime(2027, 3, 13, 12, 0, tzinfo=NEW_YORK)
    registration_id = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await ChallengeIssuer(policy).issue(
                conn, [(registration_id, now - timedelta(minutes=1))], unmailed=True
            )
        renewed = await Verifications(engine).renew(registration_id, b"n" * 16, now, policy)
    finally:
        await engine.dispose()

    assert renewed is not None
    assert renewed.code_expires_at - now == policy.code_ttl == timedelta(hours=24)
