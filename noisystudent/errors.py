"""The one exception type users see.

Library code raises `UserError` for anything the user can fix (a missing directory, an unknown
model name, a config key that does not exist). The CLI prints it as a single line,
`noisystudent: <message>`, and exits with status 2; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, stated in one sentence naming the file or field."""
