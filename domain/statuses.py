"""Where a registration stands, as its client is told (``GET /registrations/{id}``).

One vocabulary for every layer that says it: the API notes ``pending`` at accept, the status
projection writes the row, the verification use cases and the expiry sweep write the verdicts.
"""

from __future__ import annotations

# From the 202 until the read models have the user.
PENDING = "pending"
# The read models have the user (and, with verification on, a code was sent).
COMPLETED = "completed"
# A projection dead-lettered the registration's event; an operator's retry can complete it.
FAILED = "failed"
# The verdicts, after completed: the email proved, or not in time (values released, personal
# data shredded). Final: a registration has one of them at most.
VERIFIED = "verified"
EXPIRED = "expired"
