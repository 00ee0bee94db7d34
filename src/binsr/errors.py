"""User-facing errors.

Anything that is the user's fault (a missing folder, a corrupt image, an unsupported scale, a bad
checkpoint) raises :class:`BinsrError` with a one-line message naming the file or value. The CLI prints
it as ``binsr: error: <message>`` and exits with status 2, without a traceback.
"""


class BinsrError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class TrainingStoppedError(BinsrError):
    """Training stopped by SIGINT or SIGTERM after saving its state; the CLI exits with status 130."""

    exit_code = 130
