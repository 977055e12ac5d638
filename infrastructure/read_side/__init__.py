"""The read side: projectors and their runner, read-model storage, failures and replays,
rebuilds, lag gauges, status queries."""
