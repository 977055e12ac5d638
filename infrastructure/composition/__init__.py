"""The composition root: the one place that builds engines, clients and use cases, by the
process that runs them (``api``, ``read_side`` for the worker and the mailer, ``operations``
for the operator's commands). Nothing connects at import time."""
