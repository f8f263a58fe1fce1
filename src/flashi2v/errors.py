"""One exception type for problems the user can fix; the CLI prints it as one line."""


class FlashI2VError(ValueError):
    """Bad input, missing file or unsupported setting. The message names the problem and the fix."""
