"""The agent's own error: bad input, reported as one line and exit code 2."""


class UsageError(Exception):
    """A bad flag or input; the message is the one line the user sees."""
