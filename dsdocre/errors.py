"""The one exception for a user's mistake (a missing file, a bad config, a wrong model directory,
empty input). The CLI prints it as ``dsdocre <command>: error: <message>`` and exits non-zero;
any other exception is a bug and keeps its traceback."""


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong and, where it helps, what to do."""
