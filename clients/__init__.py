"""convgen clients: the asyncio client library and the convgen command line."""

from clients.arguments import (
    NIL_UUID,
    error_policy_value,
    generation_parameters,
    item_state_value,
    job_state_value,
    tier_value,
)
from clients.catalog_index import Catalog
from clients.client import DEFAULT_BATCH_TARGET, DEFAULT_GENERATION_TARGET, ConvgenClient
from clients.errors import ConvgenRpcError, ErrorDetails, FieldViolation
from clients.watch import TERMINAL_JOB_STATES, BatchJobWatch

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
