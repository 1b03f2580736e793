"""Helpers for the blob store suites: the bucket names and a store under test with a view of everything it wrote."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from convgen.blobs.port import BlobStore

BUCKET = "conversation-files"
LOG_BUCKET = "batch-logs"


@dataclass
class StoreHarness:
    """A store under test plus a way to see everything stored anywhere it could write."""

    kind: str
    store: BlobStore
    root: Path | None
    everything: Callable[[], Awaitable[set[str]]]
