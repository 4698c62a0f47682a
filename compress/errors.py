"""The one exception type users see: a one-line message that says what to do."""


class UserError(Exception):
    """Bad input or an unavailable resource. The CLI and the pytest plugin print
    ``str(err)`` on one line and exit non-zero; no traceback, nothing half-written."""
