"""Model call failures, classified once by HTTP status: transient ones are retried, the rest fail at once."""

from __future__ import annotations

from convgen.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


class ModelRateLimited(ResourceExhausted):
    """The provider answered 429 (rate limit) on every try."""

    default_reason = "MODEL_RATE_LIMITED"


class ModelOverloaded(ResourceExhausted):
    """The provider answered 529 (overloaded) on every try."""

    default_reason = "MODEL_OVERLOADED"


class ModelUnavailable(Unavailable):
    """The provider answered 5xx, or the connection failed, on every try."""

    default_reason = "MODEL_UNAVAILABLE"


class ModelTimeout(DeadlineExceeded):
    """The provider did not answer in time on every try."""

    default_reason = "MODEL_TIMEOUT"


class ModelRequestRejected(InvalidArgument):
    """The provider rejected the request as invalid (400, 404, 413, 422)."""

    default_reason = "MODEL_REQUEST_REJECTED"


class ModelAuthenticationFailed(FailedPrecondition):
    """The provider rejected convgen's API key (401)."""

    default_reason = "MODEL_AUTHENTICATION_FAILED"


class ModelPermissionDenied(PermissionDenied):
    """The provider refused access (403)."""

    default_reason = "MODEL_PERMISSION_DENIED"


class ModelNotFound(FailedPrecondition):
    """The provider does not know the configured model (404)."""

    default_reason = "MODEL_NOT_FOUND"


class ModelCreditExhausted(FailedPrecondition):
    """The provider refused the call because the account's credit balance is too low."""

    default_reason = "MODEL_CREDIT_EXHAUSTED"


class ModelOutputInvalid(FailedPrecondition):
    """The model answered, but its output cannot be used (truncated, unparseable, schema-invalid)."""

    default_reason = "MODEL_OUTPUT_INVALID"
