"""The one exception type that the CLI turns into a one-line message and exit code 2.

Anything a user can get wrong (an unknown id, a bad path, a corrupt or hostile checkpoint,
a non-positive budget) raises :class:`AlgzuError` with a message that names the problem.
Every other exception is a bug in algzu and keeps its traceback.
"""


class AlgzuError(Exception):
    """A problem with the user's input, reported in one line (exit code 2 from the CLI)."""
