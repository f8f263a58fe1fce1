"""The user-facing errors: one exception type for problems the user can fix (bad input, missing file,
unsupported setting). The CLI prints any of them as one line, ``flashi2v: error: <problem and fix>``,
with exit status 2; the Python API raises them as they are."""


class FlashI2VError(ValueError):
    """Bad input, missing file or unsupported setting. The message names the problem and the fix."""


class FlashI2VFileError(FlashI2VError, OSError):
    """A file or folder that cannot be read or written as asked (exists already, is a directory, no
    permission, not UTF-8 text, ...). Also an OSError, so ``except OSError`` callers catch it too;
    ``filename`` is the path concerned."""

    def __init__(self, message: str, path=None):
        super().__init__(message)  # one argument: OSError would read two as (errno, strerror)
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0])  # the message, not OSError's "[Errno None] None: 'path'"


class FlashI2VWarning(UserWarning):
    """Settings the model accepts but was not made for (e.g. far larger videos than it was trained on)."""
