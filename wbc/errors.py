"""Errors the command line reports as one line and exit code 2, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input: the message names the file, the problem and the fix."""
