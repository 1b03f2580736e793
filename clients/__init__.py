"""convgen clients: the asyncio client library and the convgen command line."""

from clients.client import (
    DEFAULT_BATCH_TARGET,
    DEFAULT_GENERATION_TARGET,
    NIL_UUID,
    TERMINAL_JOB_STATES,
    BatchJobWatch,
    Catalog,
    ConvgenClient,
    error_policy_value,
    generation_parameters,
    item_state_value,
    job_state_value,
    tier_value,
)
from clients.errors import ConvgenRpcError, ErrorDetails, FieldViolation

__all__ = [
    "DEFAULT_BATCH_TARGET",
    "DEFAULT_GENERATION_TARGET",
    "NIL_UUID",
    "TERMINAL_JOB_STATES",
    "BatchJobWatch",
    "Catalog",
    "ConvgenClient",
    "ConvgenRpcError",
    "ErrorDetails",
    "FieldViolation",
    "error_policy_value",
    "generation_parameters",
    "item_state_value",
    "job_state_value",
    "tier_value",
]
