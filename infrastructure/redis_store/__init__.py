"""What lives in Redis: the rate limiter and the Idempotency-Key records."""
