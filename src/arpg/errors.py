"""User-facing errors.

Every mistake a user can make (bad file, bad argument, bad image) raises an :class:`ARPGError` whose
message is one self-contained line; the CLI prints it without a traceback and exits with status 2.
"""


class ARPGError(ValueError):
    """A problem with the user's input, reported as one clear line."""


class CheckpointError(ARPGError):
    """A checkpoint file that is missing, unreadable, or does not fit the architecture."""
