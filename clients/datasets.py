"""Dataset export arguments the client accepts loosely, and downloading an export's files with their checksums."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import grpc
from google.protobuf import timestamp_pb2

from clients.arguments import TierLike, _enum, tier_value
from clients.errors import ConvgenRpcError
from convgen.v1 import dataset_pb2

ExportFormatLike: TypeAlias = int | str
GroupByLike: TypeAlias = int | str
# The CLI's short names.
_FORMAT_ALIASES = {"chat": "chat_messages", "messages": "chat_messages", "bedrock": "bedrock_claude"}
_GROUP_ALIASES = {
    "arc": "emotional_arc",
    "emotion": "emotional_arc",
    "topic": "training_topic",
    "": "none",
}


def export_format_value(value: ExportFormatLike, field_name: str = "format") -> dataset_pb2.ExportFormat.ValueType:
    """An ExportFormat from EXPORT_FORMAT_* or chat / sharegpt / bedrock / convgen."""
    number = _enum(dataset_pb2.ExportFormat, "EXPORT_FORMAT_", field_name, value, _FORMAT_ALIASES)
    return dataset_pb2.ExportFormat.ValueType(number)


def group_by_value(value: GroupByLike, field_name: str = "group_by") -> dataset_pb2.SplitGroupBy.ValueType:
    """A SplitGroupBy from SPLIT_GROUP_BY_* or none / persona / arc (emotional_arc) / topic (training_topic)."""
    number = _enum(dataset_pb2.SplitGroupBy, "SPLIT_GROUP_BY_", field_name, value, _GROUP_ALIASES)
    return dataset_pb2.SplitGroupBy.ValueType(number)


def export_selection(
    job_ids: Sequence[str],
    *,
    tiers: Sequence[TierLike] = (),
    persona_ids: Sequence[str] = (),
    emotional_arc_ids: Sequence[str] = (),
    training_topic_ids: Sequence[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    include_running: bool = False,
) -> dataset_pb2.ExportSelection:
    """An ExportSelection message."""
    selection = dataset_pb2.ExportSelection(
        job_ids=list(job_ids),
        tiers=[tier_value(t, f"tiers[{i}]") for i, t in enumerate(tiers)],
        persona_ids=list(persona_ids),
        emotional_arc_ids=list(emotional_arc_ids),
        training_topic_ids=list(training_topic_ids),
        include_running=include_running,
    )
    for field_name, moment in (("created_after", created_after), ("created_before", created_before)):
        if moment is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(moment)
            getattr(selection, field_name).CopyFrom(stamp)
    return selection


ChunkReader = Callable[[str, str, int], AsyncIterator[dataset_pb2.ExportFileChunk]]


async def download_files(
    export: dataset_pb2.Export,
    directory: Path,
    read: ChunkReader,
    *,
    names: Sequence[str] | None = None,
    on_bytes: Callable[[int], Any] | None = None,
) -> list[Path]:
    """Streams each file of a succeeded export into directory (NAME.part, checked, then renamed); returns the paths.

    A partial file left by an interrupted download is resumed from its size. A size or SHA-256 that differs from
    the export's record fails with DATA_LOSS and leaves no file under the final name.
    """
    if export.state != dataset_pb2.EXPORT_STATE_SUCCEEDED:
        state = dataset_pb2.ExportState.Name(export.state).removeprefix("EXPORT_STATE_").lower()
        raise ConvgenRpcError.client_side(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"export {export.id} is {state}; only a succeeded export has files",
            reason="EXPORT_NOT_SUCCEEDED",
        )
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    written: list[Path] = []
    for file in export.files:
        if names is not None and file.name not in names:
            continue
        partial = _PartialFile(directory, file.name, file.bytes)
        offset = await asyncio.to_thread(partial.open)
        try:
            async for chunk in read(export.id, file.name, offset):
                await asyncio.to_thread(partial.write, chunk.data)
                if on_bytes is not None:
                    on_bytes(len(chunk.data))
        finally:
            await asyncio.to_thread(partial.close)
        written.append(await asyncio.to_thread(partial.finish, file, export.id))
    return written


class _PartialFile:
    """NAME.part being downloaded (resumed from its size), hashed as it grows; renamed to NAME once checked."""

    def __init__(self, directory: Path, name: str, expected_bytes: int) -> None:
        self.target = directory / name
        self.path = directory / f"{name}.part"
        self._expected = expected_bytes
        self._digest = hashlib.sha256()
        self._out: BinaryIO | None = None

    def open(self) -> int:
        """Opens the partial file for appending; returns the offset to resume from."""
        if self.path.exists() and self.path.stat().st_size > self._expected:
            self.path.unlink()
        if self.path.exists():
            with self.path.open("rb") as existing:
                for block in iter(lambda: existing.read(1 << 20), b""):
                    self._digest.update(block)
        self._out = self.path.open("ab")
        return self._out.tell()

    def write(self, data: bytes) -> None:
        """Appends a chunk."""
        assert self._out is not None
        self._out.write(data)
        self._digest.update(data)

    def close(self) -> None:
        """Closes the partial file."""
        if self._out is not None:
            self._out.close()

    def finish(self, file: dataset_pb2.ExportFile, export_id: str) -> Path:
        """Checks size and SHA-256, then renames into place; DATA_LOSS (and no file) when they differ."""
        size = self.path.stat().st_size
        if size != file.bytes or self._digest.hexdigest() != file.sha256:
            self.path.unlink()
            raise ConvgenRpcError.client_side(
                grpc.StatusCode.DATA_LOSS,
                f"{file.name} of export {export_id}: got {size} bytes with sha256 {self._digest.hexdigest()}, "
                f"expected {file.bytes} bytes with sha256 {file.sha256}",
                reason="EXPORT_FILE_CORRUPT",
            )
        os.replace(self.path, self.target)
        return self.target
