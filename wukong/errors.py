"""The base of every error a user can act on.

Commands raise a subclass with a one-line message that says what to do; the
CLI prints `wukong: error: <message>` and exits 1 instead of a traceback.
"""


class UserError(Exception):
    """A problem the user can act on, described in one line."""
