"""Errors that the CLI turns into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: unknown task, malformed file, missing data, bad model path."""
