"""The ``credgate`` subcommands, one module per command group.

Each module owns its ``cmd_*`` handlers and a ``register(subparsers)`` that adds its
subcommands; ``gateway.cli`` calls them in ``--help`` order. ``common`` holds what they share:
``command()``, the exit codes, ``--json`` and logging.
"""
