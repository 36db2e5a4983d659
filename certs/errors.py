"""Errors of the certificate bootstrap; every message is a sentence a user can act on.

CertError                  anything that stops making or inspecting certificates
 └── CertsExistError       a file would be overwritten and --force was not given
"""

from __future__ import annotations

from collections.abc import Sequence


class CertError(Exception):
    """A certificate could not be made, read or checked; the message says which file and why."""


class CertsExistError(CertError, FileExistsError):
    """Refused to overwrite existing files; `existing` lists them."""

    def __init__(self, message: str, existing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.existing = tuple(existing)

    def __str__(self) -> str:
        return str(self.args[0])
