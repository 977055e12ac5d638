"""``python -m interfaces.bench``: the bench without the ``signup`` command around it."""

from interfaces.bench import main

main()
