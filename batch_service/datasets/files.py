"""Export files: the key of each file, and a sink that streams one into the blob store while counting and hashing it."""

from __future__ import annotations

import hashlib
import uuid
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from batch_service.datasets.domain import ExportFile
from convgen.blobs import BlobStore, BlobWriter

TRAIN = "train.jsonl"
EVAL = "eval.jsonl"
MANIFEST = "manifest.json"
REPORT = "report.md"
FILE_NAMES = (TRAIN, EVAL, MANIFEST, REPORT)
JSONL = "application/jsonl; charset=utf-8"
CONTENT_TYPES = {
    TRAIN: JSONL,
    EVAL: JSONL,
    MANIFEST: "application/json; charset=utf-8",
    REPORT: "text/markdown; charset=utf-8",
}
# Lines are gathered into writes of this size: one blob store call per MiB, not per line.
_BUFFER_BYTES = 1024 * 1024


def file_key(export_id: uuid.UUID, name: str) -> str:
    """{export_id}/{name}."""
    return f"{export_id}/{name}"


class FileSink:
    """Streams one export file: buffers lines, counts bytes and rows, hashes the content; commits on a clean exit."""

    def __init__(self, blobs: BlobStore, bucket: str, export_id: uuid.UUID, name: str) -> None:
        self._blobs = blobs
        self._bucket = bucket
        self._key = file_key(export_id, name)
        self._name = name
        self._context: AbstractAsyncContextManager[BlobWriter] | None = None
        self._writer: BlobWriter | None = None
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self.bytes = 0
        self.rows = 0

    async def __aenter__(self) -> FileSink:
        self._context = self._blobs.open_writer(self._bucket, self._key, content_type=CONTENT_TYPES[self._name])
        self._writer = await self._context.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._context is not None
        if exc is None:
            try:
                await self._flush()
            except BaseException as error:
                await self._context.__aexit__(type(error), error, error.__traceback__)
                raise
        await self._context.__aexit__(exc_type, exc, tb)

    async def add_line(self, line: bytes) -> None:
        """Appends one JSON line (with its newline)."""
        self._buffer += line
        self._digest.update(line)
        self.bytes += len(line)
        self.rows += 1
        if len(self._buffer) >= _BUFFER_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        assert self._writer is not None
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            await self._writer.write(data)

    def describe(self) -> ExportFile:
        """The file as written (valid after a clean exit)."""
        ref = self._blobs.locate(self._bucket, self._key)
        return ExportFile(
            name=self._name,
            bucket=ref.bucket,
            key=ref.key,
            uri=ref.uri,
            bytes=self.bytes,
            rows=self.rows,
            sha256=self._digest.hexdigest(),
            content_type=CONTENT_TYPES[self._name],
        )


async def put_document(
    blobs: BlobStore, bucket: str, export_id: uuid.UUID, name: str, data: bytes, *, rows: int = 0
) -> ExportFile:
    """Writes a small file (the manifest, the report) in one put and describes it."""
    ref = await blobs.put(bucket, file_key(export_id, name), data, content_type=CONTENT_TYPES[name])
    return ExportFile(
        name=name,
        bucket=ref.bucket,
        key=ref.key,
        uri=ref.uri,
        bytes=len(data),
        rows=rows,
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=CONTENT_TYPES[name],
    )
