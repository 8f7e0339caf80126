"""Sub-commands of the ``arpg`` CLI; each module defines ``register(subparsers)``."""
