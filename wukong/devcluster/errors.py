"""The one error type of the local control plane.

Every failure a user can hit while starting or stopping it (no Go, a port in
use, a component that crashed) is raised as `DevClusterError` with a message
that fits on one line and names the log to read; the CLI prints it and exits 1
instead of showing a traceback.
"""

from wukong.errors import UserError


class DevClusterError(UserError):
    """A local control plane problem the user can act on."""
