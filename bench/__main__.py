"""``python -m bench``: the bench without the ``signup`` command around it."""

from bench import main

main()
