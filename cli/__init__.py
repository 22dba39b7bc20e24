"""The ``unictr`` command line (import name ``unictr_cli``)."""
