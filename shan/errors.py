"""The library's errors: every error this project raises on purpose derives from :class:`ShanError`.

Callers that want "any error the library explains in words" (the CLIs, the app) catch
``ShanError`` and print its one-line message; anything else is a bug and keeps its traceback.
The concrete classes also derive from the builtin they used to be (mostly ``ValueError``), so
code that caught those keeps working.
"""

from __future__ import annotations


class ShanError(Exception):
    """Base class of every error the library raises with a message meant for a user."""


class DeviceError(ShanError, ValueError):
    """A device was asked for that this machine does not have (e.g. ``cuda`` without a GPU)."""


__all__ = ["ShanError", "DeviceError"]
