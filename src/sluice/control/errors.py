"""Errors the control plane answers with, in AWS's own terms.

Every failure a caller can cause becomes an `ApiError` carrying the service's
error code (`DBProxyNotFoundFault`, `NoSuchEntity`, ...), the HTTP status AWS
uses for it, and whether it was the sender's fault. The protocol layer turns it
into the wire format of the service that was called (query XML, EC2 XML,
JSON 1.1). Messages never carry a secret.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the API caller."""

    def __init__(self, code: str, message: str, status: int = 400, sender: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, {self.status})"


def not_found(code: str, message: str) -> ApiError:
    """A missing resource: HTTP 404 for most query services, as AWS answers."""
    return ApiError(code, message, 404)


def invalid(message: str, code: str = "InvalidParameterValue") -> ApiError:
    """A parameter the service rejects."""
    return ApiError(code, message, 400)


# Signature and credential errors (the same in every service).
_INVALID_TOKEN = "The security token included in the request is invalid."
_EXPIRED_TOKEN = "The security token included in the request is expired"


def invalid_token(message: str = _INVALID_TOKEN) -> ApiError:
    return ApiError("InvalidClientTokenId", message, 403)


def bad_signature(message: str) -> ApiError:
    return ApiError("SignatureDoesNotMatch", message, 403)


def expired_token(message: str = _EXPIRED_TOKEN) -> ApiError:
    return ApiError("ExpiredToken", message, 403)


def missing_auth(message: str = "Request is missing Authentication Token") -> ApiError:
    return ApiError("MissingAuthenticationToken", message, 403)


def internal(message: str = "An internal error occurred.") -> ApiError:
    return ApiError("InternalFailure", message, 500, sender=False)
