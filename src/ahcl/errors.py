"""User-facing errors.

Every failure a user can cause (a missing folder, a bad file, a wrong option) raises an
:class:`AhclError` whose message is one line that says what is wrong and how to fix it.
The CLI prints that line and exits with status 1; anything else is a bug and shows a traceback.

Errors carry their facts as fields (``path``, ``name``, ``choices``, ``status``, ...) so callers
read them instead of editing message strings, and each subclasses the builtin that fits
(``FileNotFoundError``, ``ValueError``, ``KeyError``) as torchgeo's errors do. ``str()`` is always
the plain message, without the quotes ``KeyError`` would add.
"""

from __future__ import annotations

from typing import Any, Iterable


class AhclError(Exception):
    """Base class of errors caused by user input; the message is one actionable line.

    Args:
        message: the line shown to the user.
        **fields: facts about the failure, set as attributes (``err.path``, ``err.status``).
    """

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        # Subclasses build their message from their own arguments; rebuild from the finished
        # state so errors survive pickling (DataLoader workers, torch.distributed objects).
        return (_rebuild, (type(self), self.message, self.fields))


def _rebuild(cls: type, message: str, fields: dict[str, Any]) -> AhclError:
    err = cls.__new__(cls)
    AhclError.__init__(err, message, **fields)
    return err


class UnknownNameError(AhclError, KeyError):
    """A name (method, backbone, dataset, class, config key) that is not registered.

    Attributes:
        kind: what was looked up (``"method"``, ``"backbone"``, ...).
        name: the name given.
        choices: the accepted names.
    """

    def __init__(self, kind: str, name: Any, choices: Iterable[Any], hint: str = "",
                 context: str = "") -> None:
        choices = list(choices)
        message = (f"unknown {kind} {name!r}{' ' + context if context else ''}; "
                   f"choose from {', '.join(map(str, choices))}")
        super().__init__(message + (f" ({hint})" if hint else ""), kind=kind, name=name,
                         choices=choices)


class InvalidValueError(AhclError, ValueError):
    """A setting with a value of the wrong type or out of range.

    Attributes:
        name: the setting (``"n_bits"``, ``"lr"``, ...).
        value: the value given.
        expected: what is accepted, in words (``"a positive multiple of 8"``).
    """

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(f"{name} must be {expected}, got {value!r}", name=name, value=value,
                         expected=expected)


class DatasetError(AhclError):
    """A dataset folder, archive or download is missing, incomplete or invalid."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder (or a file in it) is not where it was looked for; ``path`` says where."""


class ChecksumError(DatasetError):
    """A downloaded file does not match its published checksum."""


class RunError(AhclError):
    """A run directory is missing files, from another version, or inconsistent."""


class IndexFileError(AhclError):
    """An index file is truncated, corrupted or of an unknown version."""


class DiskFullError(AhclError):
    """A file could not be written because the disk (or quota) is full; nothing was replaced.

    Fields: ``path`` (the file that was being written).
    """
