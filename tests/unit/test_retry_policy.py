from datetime import timedelta

from application.retry_policy import RetryPolicy


def test_the_delay_doubles_after_each_failed_attempt_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base=timedelta(seconds=1), cap=timedelta(seconds=5))
    delays = [policy.delay_after(n).total_seconds() for n in range(1, 6)]
    assert delays == [1, 2, 4, 5, 5]


def test_the_event_is_given_up_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
