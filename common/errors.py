"""The zoo's one error type for bad input data.

``DataError`` is a ``ValueError`` whose message names the file (and, where
there is one, the entry) at fault; the CLI prints it as one line and exits
with status 2. Bad configuration raises a plain ``ValueError`` naming the
argument. Every wing raises these two and nothing else for bad input.
"""


class DataError(ValueError):
    """Unreadable or inconsistent input data; the message names the file."""
