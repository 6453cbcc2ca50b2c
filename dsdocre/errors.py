"""The one exception for a user's mistake (a missing file, a bad config, a wrong model directory,
empty input). The CLI prints it as ``dsdocre <command>: error: <message>`` and exits non-zero;
any other exception is a bug and keeps its traceback."""


class UserError(ValueError):
    """A mistake the user can fix; the message says what is wrong and, where it helps, what to do."""


class Interrupted(Exception):
    """A training run that stopped early on purpose, with a checkpoint to resume from: preempted
    (SIGTERM) or stopped by numerical faults. The CLI prints the message and exits with
    ``exit_code`` (143 for SIGTERM, as a process killed by it would; 3 for numerical faults)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
