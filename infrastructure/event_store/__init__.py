"""The write side: the event store, its group commit and one-round-trip append, the
uniqueness claims, the per-person keys."""
