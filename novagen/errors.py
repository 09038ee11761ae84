"""Error types: one per kind of failure, each carrying a one-line message for the CLI.

`InputError` and its subclasses mean the caller gave something novagen cannot use (CLI exit 2);
`CheckFailed` means a check ran and its answer is no (CLI exit 1).
"""

from __future__ import annotations


class NovagenError(Exception):
    """Base of every error novagen raises on purpose."""

    exit_code = 2


class InputError(NovagenError, ValueError):
    """Bad input: the message names the bad value and what would be accepted."""


class SpecError(InputError):
    """A spec string such as "F(6,3)" that cannot be parsed or is out of range."""


class PointsError(InputError):
    """Interpolation points that are malformed, too few or too many, duplicated or singular."""


class TransformFileError(InputError):
    """A file or object that does not hold a transform (AT, G, BT) novagen can read."""


class CatalogError(InputError):
    """A catalog name that does not exist, or a catalog file that is damaged."""


class CheckFailed(NovagenError):
    """A check ran to completion and failed (e.g. verification disproved an algorithm)."""

    exit_code = 1


class VerificationFailed(CheckFailed):
    """The algorithm does not compute the correlation it claims; `certificate` says where."""

    def __init__(self, message: str, certificate: object | None = None) -> None:
        super().__init__(message)
        self.certificate = certificate
