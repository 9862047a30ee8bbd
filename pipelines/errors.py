"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the pipeline, the command line or the input that the user can fix.

    ``str(error)`` is the one line the CLI prints: it names the file, the YAML line and the key.
    """

    exit_code = 2
