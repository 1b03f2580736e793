"""The filesystem blob store: a bucket is a directory under the root, a key is a relative path in it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import itertools
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from convgen.blobs.port import (
    DEFAULT_CHUNK_BYTES,
    BlobNotFound,
    BlobRef,
    BlobStoreUnavailable,
    BlobWriter,
    InvalidBlobKey,
    check_key,
)

_T = TypeVar("_T")

# Reading a key that is a directory, or under a file, of other keys (e.g. "a" when "a/b" exists) finds no blob.
_MISSING = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def _check_bucket(bucket: str) -> None:
    # The port validates buckets only together with a key; any valid key will do here.
    check_key(bucket, "bucket")


class FileBlobStore:
    """Blobs as files under root/bucket/key, written atomically (temp file + rename)."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self._root = Path(os.path.abspath(root))
        self._real_root = os.path.realpath(self._root)
        # fsync makes each blob durable against a machine crash, at a large cost per write.
        self._fsync = fsync
        # Directories already checked to resolve inside the root (blob keys share few parents).
        self._confined: set[str] = set()
        self._temp_counter = itertools.count()
        # File system calls run on this store's own thread, never on the event loop: with PostgreSQL committing on
        # the same disk one create + rename took 1 ms at p50 and up to 18 ms, stalling every call in the process.
        # The hops cost CPU (~0.9 ms per conversation here) but free the loop: +5 % items/s with 64 model calls in
        # flight, where the loop is the bottleneck.
        # One thread keeps writes to a directory from contending for its lock.
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="convgen-blobs")

    @property
    def root(self) -> Path:
        """The absolute root directory."""
        return self._root

    async def put(self, bucket: str, key: str, data: bytes, *, content_type: str) -> BlobRef:
        """Writes (or overwrites) a blob atomically and returns where it is."""
        path = self._path(bucket, key)
        await self._run(self._put_sync, bucket, key, path, data)
        return BlobRef(bucket=bucket, key=key, uri=path.as_uri())

    async def get(self, bucket: str, key: str) -> bytes:
        """Reads a whole blob; BlobNotFound if absent."""
        path = self._path(bucket, key)
        return await self._run(self._get_sync, bucket, key, path)

    async def exists(self, bucket: str, key: str) -> bool:
        """True when a blob is at bucket/key."""
        path = self._path(bucket, key)
        return await self._run(self._exists_sync, bucket, key, path)

    @contextlib.asynccontextmanager
    async def open_writer(self, bucket: str, key: str, *, content_type: str) -> AsyncIterator[BlobWriter]:
        """Streams a blob into a temp file beside it, renamed into place when the block ends without error."""
        path = self._path(bucket, key)
        tmp_name, handle = await self._run(self._open_temp_sync, bucket, key, path)
        writer = _FileWriter(self, bucket, key, handle)
        try:
            yield writer
            await self._run(self._commit_sync, bucket, key, handle, tmp_name, path)
        except BaseException:
            # Shielded: a cancelled export must still remove its temp file.
            await asyncio.shield(self._run(self._discard_sync, handle, tmp_name))
            raise

    async def read_chunks(
        self, bucket: str, key: str, *, offset: int = 0, chunk_size: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Reads a blob from offset in chunks of at most chunk_size bytes; BlobNotFound if absent."""
        path = self._path(bucket, key)
        handle = await self._run(self._open_read_sync, bucket, key, path, offset)
        try:
            while True:
                chunk = await self._run(self._read_sync, bucket, key, handle, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            await asyncio.shield(self._run(handle.close))

    def locate(self, bucket: str, key: str) -> BlobRef:
        """The reference a blob at bucket/key has (whether or not it exists)."""
        return BlobRef(bucket=bucket, key=key, uri=self._path(bucket, key).as_uri())

    async def ensure_buckets(self, buckets: list[str]) -> None:
        """Creates the bucket directories that do not exist."""
        for bucket in buckets:
            _check_bucket(bucket)
        await self._run(self._ensure_sync, buckets)

    async def close(self) -> None:
        """Stops the I/O thread after the writes already submitted."""
        await asyncio.to_thread(self._io.shutdown, wait=True)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        """Runs a blocking file operation on the store's thread."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._io, function, *args)
        except RuntimeError as exc:  # the executor refuses work once close() has shut it down
            raise BlobStoreUnavailable(f"the file blob store is closed ({exc})") from exc
        return await future

    def _path(self, bucket: str, key: str) -> Path:
        check_key(bucket, key)
        path = self._root / bucket / key
        # check_key already forbids '..' and absolute keys; this guards against a future change to it.
        if os.path.commonpath([self._root, path]) != str(self._root):
            raise InvalidBlobKey(f"blob key {key!r} escapes the blob root")
        return path

    def _confine(self, what: str, path: Path) -> None:
        """Raises InvalidBlobKey when path, with symlinks followed, leaves the root."""
        if os.path.commonpath([self._real_root, os.path.realpath(path)]) != self._real_root:
            raise InvalidBlobKey(f"{what} resolves outside the blob root")

    def _confine_parent(self, what: str, path: Path) -> None:
        """Creates path's directory and checks it resolves inside the root (once per directory)."""
        parent = str(path.parent)
        if parent in self._confined:
            return
        self._confine(what, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The path may have gained a symlinked directory between the check above and mkdir.
        self._confine(what, path)
        if len(self._confined) > 10_000:
            self._confined.clear()
        self._confined.add(parent)

    def _temp_name(self, path: Path) -> str:
        # A leading '.' is not a valid key segment, so a temp file can never be mistaken for a blob.
        return os.path.join(path.parent, f".{path.name}.{os.getpid()}.{next(self._temp_counter)}.tmp")

    def _put_sync(self, bucket: str, key: str, path: Path, data: bytes) -> None:
        try:
            self._confine_parent(f"blob {bucket}/{key}", path)
            tmp_name = self._temp_name(path)
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
                    if self._fsync:
                        tmp.flush()
                        os.fsync(tmp.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
                raise
        except OSError as exc:
            raise BlobStoreUnavailable(f"put of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    def _open_temp_sync(self, bucket: str, key: str, path: Path) -> tuple[str, IO[bytes]]:
        try:
            self._confine_parent(f"blob {bucket}/{key}", path)
            tmp_name = self._temp_name(path)
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            return tmp_name, os.fdopen(fd, "wb")
        except OSError as exc:
            raise BlobStoreUnavailable(f"open of blob {bucket}/{key} for writing failed: {_cause(exc)}") from exc

    def _append_sync(self, bucket: str, key: str, handle: IO[bytes], data: bytes) -> None:
        try:
            handle.write(data)
        except OSError as exc:
            raise BlobStoreUnavailable(f"write of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    def _commit_sync(self, bucket: str, key: str, handle: IO[bytes], tmp_name: str, path: Path) -> None:
        try:
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
            handle.close()
            os.replace(tmp_name, path)
        except OSError as exc:
            raise BlobStoreUnavailable(f"put of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    @staticmethod
    def _discard_sync(handle: IO[bytes], tmp_name: str) -> None:
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)

    def _open_read_sync(self, bucket: str, key: str, path: Path, offset: int) -> IO[bytes]:
        try:
            self._confine(f"blob {bucket}/{key}", path)
            handle = path.open("rb")
            handle.seek(offset)
            return handle
        except OSError as exc:
            if exc.errno in _MISSING:
                raise BlobNotFound(f"no blob at bucket {bucket!r} key {key!r}") from exc
            raise BlobStoreUnavailable(f"get of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    @staticmethod
    def _read_sync(bucket: str, key: str, handle: IO[bytes], size: int) -> bytes:
        try:
            return handle.read(size)
        except OSError as exc:
            raise BlobStoreUnavailable(f"read of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    def _get_sync(self, bucket: str, key: str, path: Path) -> bytes:
        try:
            self._confine(f"blob {bucket}/{key}", path)
            return path.read_bytes()
        except OSError as exc:
            if exc.errno in _MISSING:
                raise BlobNotFound(f"no blob at bucket {bucket!r} key {key!r}") from exc
            raise BlobStoreUnavailable(f"get of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    def _exists_sync(self, bucket: str, key: str, path: Path) -> bool:
        try:
            self._confine(f"blob {bucket}/{key}", path)
            return path.is_file()
        except OSError as exc:
            raise BlobStoreUnavailable(f"exists of blob {bucket}/{key} failed: {_cause(exc)}") from exc

    def _ensure_sync(self, buckets: list[str]) -> None:
        for bucket in buckets:
            path = self._root / bucket
            try:
                self._confine(f"bucket {bucket}", path)
                path.mkdir(parents=True, exist_ok=True)
                self._confine(f"bucket {bucket}", path)
            except OSError as exc:
                raise BlobStoreUnavailable(f"ensure_buckets of bucket {bucket!r} failed: {_cause(exc)}") from exc


class _FileWriter:
    """A blob being written to its temp file on the store's I/O thread."""

    def __init__(self, store: FileBlobStore, bucket: str, key: str, handle: IO[bytes]) -> None:
        self._store = store
        self._bucket = bucket
        self._key = key
        self._handle = handle

    async def write(self, data: bytes) -> None:
        """Appends bytes to the temp file."""
        if data:
            await self._store._run(self._store._append_sync, self._bucket, self._key, self._handle, data)


def _cause(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc}"
