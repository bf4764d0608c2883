"""Errors that the CLI turns into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: unknown task, malformed file, missing data, bad model path.

    The message is one line by construction (whitespace runs, newlines included, become one space),
    whatever a library or the user's file put into it."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
