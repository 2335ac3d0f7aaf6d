"""The project's one error type for unusable input.

Every reader raises ``DataError`` with a message that names the file (and, where known, the line, image
id or detection); ``util.common.cli.run`` turns it into one line on stderr and exit status 1.
"""


class DataError(ValueError):
    """Input that cannot be used; the message names the file and, where known, the line or image id."""
