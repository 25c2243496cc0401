"""User-facing errors.

Every failure a user can cause (a missing folder, a bad file, a wrong option) raises an
:class:`AhclError` whose message is one line that says what is wrong and how to fix it.
The CLI prints that line and exits with status 1; anything else is a bug and shows a traceback.
"""


class AhclError(Exception):
    """Base class of errors caused by user input; the message is one actionable line."""


class DatasetError(AhclError):
    """A dataset folder, archive or download is missing, incomplete or invalid."""


class ChecksumError(DatasetError):
    """A downloaded file does not match its published checksum."""


class RunError(AhclError):
    """A run directory is missing files, from another version, or inconsistent."""


class IndexFileError(AhclError):
    """An index file is truncated, corrupted or of an unknown version."""
