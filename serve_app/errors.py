"""Errors every layer raises and the HTTP layer turns into 4xx answers.

They cross process boundaries (a deployment raises, the ingress answers), so they pickle by their
arguments. :func:`app_error_of` finds one inside the wrapper Ray puts around a remote exception.
"""
from __future__ import annotations


class AppError(Exception):
    """A request the application refuses: ``status`` (HTTP), ``code`` (machine-readable), message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 field: str | None = None):
        super().__init__(message, status, code, field)
        self.message = message
        self.status = status or type(self).status
        self.code = code or type(self).code
        self.field = field

    def __str__(self) -> str:
        return self.message

    def payload(self) -> dict:
        out = {"error": self.code, "detail": self.message}
        if self.field:
            out["field"] = self.field
        return out


class InputError(AppError):
    """Malformed or invalid input: wrong types, unknown fields, unusable uploads."""
    status = 422
    code = "invalid_input"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Unavailable(AppError):
    """A feature the loaded artifacts cannot provide (e.g. no text vectors in the embed run)."""
    status = 503
    code = "unavailable"


class VersionMoved(Unavailable):
    """An image vector made by another version's encoder than the one answering (the two
    deployments were mid-move between versions); the route embeds again."""
    code = "version_moving"


def app_error_of(exc: BaseException) -> AppError | None:
    """The AppError behind ``exc``: itself, or the cause Ray wrapped it in (RayTaskError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        # Ray's wrapper subclasses the cause's type but carries the cause's state in ``.cause``
        # (class attributes such as ``status`` would read the defaults): prefer the cause.
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if isinstance(exc, AppError):
            return exc
        exc = exc.__cause__
    return None
