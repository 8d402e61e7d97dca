"""The one exception type the kit raises for a user's mistake.

A `UserError` carries a single line that names the problem and the fix. The CLI prints it
without a traceback and exits with status 2; library callers (notebooks) see an ordinary
exception. Everything else that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a config key, a file, a run directory. One line, with the fix."""
