"""One run of an export, in two passes over the selection with bounded memory.

Pass 1 streams the selected rows from PostgreSQL (a cursor in one REPEATABLE READ snapshot), reads their final blobs
with bounded concurrency (in order), validates them, formats each line, signs it for near-duplicate detection and
appends what pass 2 needs to a local spool file. The near-duplicate clusters need every signature, so the decision to
drop a row can only be made after the last one: the spool (about the size of the output, on local disk) lets pass 2
write the files without reading a single blob again (a second read of 100,000 blobs from S3 would double the
export's slowest part). Pass 2 reads the spool back in order and streams the kept lines into train.jsonl and
eval.jsonl, counting the report's figures of the exported rows. Memory holds per row only its 512-byte signature
and a few small ids, never the conversations.
"""

from __future__ import annotations

import array
import asyncio
import collections
import hashlib
import json
import logging
import struct
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from batch_service.datasets import card
from batch_service.datasets.domain import (
    DroppedRow,
    ExportFile,
    ExportResult,
    ExportSpec,
    RowFacts,
    SelectedConversation,
)
from batch_service.datasets.files import EVAL, MANIFEST, REPORT, TRAIN, FileSink, put_document
from batch_service.datasets.formats import BUILDERS, FormatRejected, dumps, ordered_turns
from batch_service.datasets.near_duplicates import Clusters, NearDuplicateIndex
from batch_service.datasets.report import ReportBuilder, trimmed
from batch_service.datasets.split import LeakageGuard, Split, assign, split_key
from batch_service.datasets.text_features import ROLE_CODES, Vocabulary, conversation_hash, stable_hash
from batch_service.store import export_selection
from convgen.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable
from convgen.conversation_rules import validate_conversation
from convgen.db.database import Database
from convgen.v1 import dataset_pb2

logger = logging.getLogger(__name__)

DROPPED_SAMPLE = 100
# This many blob reads in a row failing with the store unavailable means the store is down, not one blob bad:
# the run stops (and is retried later) instead of dropping every row.
STORE_DOWN_AFTER = 20
_READ_RETRIES = 3
_RECORD_HEADER = struct.Struct(">III")
_TURN_HEADER = struct.Struct(">BI")
_ROLES = {code: role for role, code in ROLE_CODES.items()}


class BlobStoreDown(BlobStoreUnavailable):
    """Too many blob reads in a row failed: the export is retried later."""


@dataclass
class Progress:
    """How far a run is; the runner's heartbeat stores it."""

    selected: int = 0
    processed: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    """Where files go and how hard the run may push the blob store."""

    bucket: str
    read_concurrency: int
    spool_dir: Path | None


@dataclass
class _RowKeys:
    """Per indexed row: the little pass 2 and the report need about it (bytes, not objects: 100,000 rows)."""

    business_keys: bytearray = field(default_factory=bytearray)
    combos: list[int] = field(default_factory=list)

    def add(self, row: SelectedConversation, combo: int) -> None:
        """Appends a row's business key and combination."""
        self.business_keys += row.business_key.bytes
        self.combos.append(combo)

    def business_key(self, index: int) -> uuid.UUID:
        """The business key of the row with this index."""
        return uuid.UUID(bytes=bytes(self.business_keys[index * 16 : index * 16 + 16]))


def combo_hash(job_id: uuid.UUID, persona: uuid.UUID, arc: uuid.UUID, topic: uuid.UUID) -> int:
    """A stable key of a job's persona × arc × topic combination."""
    return stable_hash(f"{job_id}/{persona}/{arc}/{topic}")


class ExportPipeline:
    """Runs one export from its spec to its files and report."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        config: PipelineConfig,
        *,
        export_id: uuid.UUID,
        created_at: datetime,
        spec: ExportSpec,
        progress: Progress,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._config = config
        self._export_id = export_id
        self._created_at = created_at
        self._spec = spec
        self._progress = progress
        self._builder = ReportBuilder(spec)
        self._vocabulary = Vocabulary()
        self._index = NearDuplicateIndex(spec.near_duplicate_threshold, self._vocabulary)
        self._keys = _RowKeys()
        self._exact_first: dict[int, int] = {}
        self._template_ids: set[uuid.UUID] = set()
        self._dropped: list[DroppedRow] = []
        self._dropped_combos: Counter[int] = Counter()
        self._near_dropped: dict[int, int] = {}
        self._unavailable_in_a_row = 0

    async def run(self) -> ExportResult:
        """Both passes, then the manifest and the report; returns what to record."""
        spec = self._spec
        with tempfile.TemporaryFile(dir=self._config.spool_dir, prefix="convgen-export-") as spool:
            async with self._db.connection() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                self._progress.selected = await export_selection.count_selected(conn, spec.selection)
                rows = export_selection.stream_selected(conn, spec.selection)
                async for row, blob in self._read_in_order(rows):
                    self._first_pass(row, blob, spool)
                    self._progress.processed += 1
                clusters = self._decide_near_duplicates()
                # Holes need the dropped rows of each combination: the near-duplicate ones are known only now.
                async for cell in export_selection.stream_coverage(conn, spec.selection):
                    combo = combo_hash(cell.job_id, cell.persona_id, cell.emotional_arc_id, cell.training_topic_id)
                    self._builder.coverage(cell, self._dropped_combos.get(combo, 0))
                templates = await export_selection.template_texts(conn, sorted(self._template_ids))
            logger.info(
                "export %s: read %d conversations; %d near-duplicate clusters (%d candidate pairs, %d verified)",
                self._export_id,
                self._progress.processed,
                len(clusters.members),
                clusters.candidate_pairs,
                clusters.verified_pairs,
            )
            spool.seek(0)
            files = await self._second_pass(spool)
        selected = self._progress.processed
        template_hashes = {t: hashlib.sha256(text.encode()).hexdigest() for t, (_, text) in templates.items()}
        report = self._builder.build(template_hashes, spec.selection.job_ids)
        dropped_by_reason = dict(sorted(Counter(d.kind for d in self._dropped).items()))
        counts = {
            "selected": selected,
            "exported_train": self._builder.train_rows,
            "exported_eval": self._builder.eval_rows,
            "dropped": len(self._dropped),
            "dropped_by_reason": dropped_by_reason,
        }
        if selected != self._builder.train_rows + self._builder.eval_rows + len(self._dropped):
            raise AssertionError(f"export {self._export_id}: rows do not add up: {counts}")
        if not spec.report_only:
            files += await self._write_card(counts, files, report)
        return ExportResult(
            selected=selected,
            exported_train=self._builder.train_rows,
            exported_eval=self._builder.eval_rows,
            dropped_by_reason=dropped_by_reason,
            files=files,
            report=card.report_json(trimmed(report)),
            dropped_sample=self._dropped[:DROPPED_SAMPLE],
        )

    async def _write_card(
        self, counts: dict[str, Any], files: list[ExportFile], report: dataset_pb2.DatasetReport
    ) -> list[ExportFile]:
        """Writes manifest.json and report.md."""
        manifest = card.manifest(
            export_id=self._export_id,
            created_at=self._created_at,
            spec=self._spec,
            counts=counts,
            files=files,
            report=report,
            dropped=self._dropped,
        )
        written = [await put_document(self._blobs, self._config.bucket, self._export_id, MANIFEST, manifest)]
        text = card.markdown(export_id=self._export_id, spec=self._spec, counts=counts, files=files, report=report)
        written.append(await put_document(self._blobs, self._config.bucket, self._export_id, REPORT, text.encode()))
        return written

    # --- pass 1 ----------------------------------------------------------------------------------------------------

    async def _read_in_order(
        self, rows: AsyncIterator[SelectedConversation]
    ) -> AsyncIterator[tuple[SelectedConversation, bytes | BaseException]]:
        """Each row with its final blob (or the error reading it), in row order, read_concurrency reads at once."""
        pending: collections.deque[tuple[SelectedConversation, asyncio.Task[bytes]]] = collections.deque()
        try:
            async for row in rows:
                pending.append((row, asyncio.create_task(self._read_blob(row))))
                if len(pending) >= self._config.read_concurrency:
                    yield await self._outcome(*pending.popleft())
            while pending:
                yield await self._outcome(*pending.popleft())
        finally:
            for _, task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*(task for _, task in pending), return_exceptions=True)

    async def _read_blob(self, row: SelectedConversation) -> bytes:
        """The final blob, retried briefly when the store is unavailable."""
        for attempt in range(_READ_RETRIES - 1):
            try:
                return await self._blobs.get(row.final_bucket, row.final_key)
            except BlobStoreUnavailable:
                await asyncio.sleep(0.2 * 2**attempt)
        return await self._blobs.get(row.final_bucket, row.final_key)

    async def _outcome(
        self, row: SelectedConversation, task: asyncio.Task[bytes]
    ) -> tuple[SelectedConversation, bytes | BaseException]:
        try:
            data = await task
        except BlobNotFound as missing:
            return row, missing
        except BlobStoreUnavailable as error:
            self._unavailable_in_a_row += 1
            if self._unavailable_in_a_row >= STORE_DOWN_AFTER:
                raise BlobStoreDown(
                    f"{STORE_DOWN_AFTER} conversation blobs in a row could not be read; the blob store looks down "
                    f"(last: {error.message}); the export will be retried"
                ) from error
            return row, error
        self._unavailable_in_a_row = 0
        return row, data

    def _drop(self, row: SelectedConversation, reason: str) -> None:
        self._dropped.append(DroppedRow(row.business_key, row.pk, reason))
        self._dropped_combos[combo_hash(row.job_id, row.persona_id, row.emotional_arc_id, row.training_topic_id)] += 1

    def _first_pass(self, row: SelectedConversation, blob: bytes | BaseException, spool: IO[bytes]) -> None:
        """Validates, formats and signs one row, and spools it (or records why it is dropped)."""
        facts = RowFacts.of(row)
        if isinstance(blob, BaseException):
            self._builder.selected(facts, set())
            if isinstance(blob, BlobNotFound):
                self._drop(row, f"blob_missing: {row.final_bucket}/{row.final_key}")
            else:
                self._drop(row, f"blob_unreadable: {getattr(blob, 'message', blob)}")
            return
        try:
            document = json.loads(blob)
        except ValueError as error:
            self._builder.selected(facts, set())
            self._drop(row, f"blob_unreadable: not JSON ({error})")
            return
        findings = validate_conversation(document)
        self._builder.selected(facts, findings.rules)
        if not findings.ok:
            first = next(f for f in findings.findings if f.blocking)
            self._drop(row, f"validation:{first.rule}: {first.message}")
            return
        assert isinstance(document, dict)
        spec = self._spec
        try:
            line = dumps(BUILDERS[spec.format](row, document, spec.system_prompt))
        except FormatRejected as rejected:
            self._drop(row, f"format:{rejected}")
            return
        turns = ordered_turns(document)
        turn_ids = [self._vocabulary.ids(t.content) for t in turns]
        index = self._index.add(turn_ids)
        exact = conversation_hash([t.role for t in turns], turn_ids)
        self._builder.exact_groups[exact] += 1
        earlier = self._exact_first.setdefault(exact, index)
        if earlier != index:
            self._index.link_exact(earlier, index)
        self._keys.add(row, combo_hash(row.job_id, row.persona_id, row.emotional_arc_id, row.training_topic_id))
        self._template_ids.add(row.template_id)
        key = split_key(row, spec.group_by)
        header = {
            "i": index,
            "s": int(assign(key, spec.seed, spec.eval_fraction)),
            "g": key,
            "row": facts.to_json(),
        }
        header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
        _write_record(spool, header_bytes, _encode_turns([t.role for t in turns], turn_ids), line)

    def _decide_near_duplicates(self) -> Clusters:
        """Clusters the signatures; with drop_near_duplicates every member but the earliest is to be dropped."""
        clusters = self._index.clusters()
        keys = self._keys
        self._builder.clusters(clusters, lambda index: str(keys.business_key(index)))
        if self._spec.drop_near_duplicates:
            for members in clusters.members:
                for member in members[1:]:
                    self._near_dropped[member] = members[0]
                    self._dropped_combos[keys.combos[member]] += 1
        return clusters

    # --- pass 2 ----------------------------------------------------------------------------------------------------

    async def _second_pass(self, spool: IO[bytes]) -> list[ExportFile]:
        """Streams the kept spooled lines into train and eval and counts the exported rows."""
        guard = LeakageGuard(self._spec.group_by)
        self._builder.begin_exported(len(self._vocabulary))
        files: list[ExportFile] = []
        if self._spec.report_only:
            await self._replay(spool, guard, None, None)
        else:
            async with (
                FileSink(self._blobs, self._config.bucket, self._export_id, TRAIN) as train,
                FileSink(self._blobs, self._config.bucket, self._export_id, EVAL) as evaluation,
            ):
                await self._replay(spool, guard, train, evaluation)
            files = [train.describe(), evaluation.describe()]
        self._builder.train_groups = guard.groups(Split.TRAIN)
        self._builder.eval_groups = guard.groups(Split.EVAL)
        return files

    async def _replay(
        self, spool: IO[bytes], guard: LeakageGuard, train: FileSink | None, evaluation: FileSink | None
    ) -> None:
        """Each spooled row: dropped as a near-duplicate, or counted and written to its split."""
        keys = self._keys
        for count, (header_bytes, turns_bytes, line) in enumerate(_read_records(spool), start=1):
            header = json.loads(header_bytes)
            facts = RowFacts.from_json(header["row"])
            kept = self._near_dropped.get(header["i"])
            if kept is not None:
                reason = f"near_duplicate_of:{keys.business_key(kept)}"
                self._dropped.append(DroppedRow(facts.business_key, facts.pk, reason))
                continue
            split = Split(header["s"])
            guard.check(header["g"], split, facts.business_key)
            roles, turn_ids = _decode_turns(turns_bytes)
            first_user = next((ids for role, ids in zip(roles, turn_ids, strict=True) if role == "user"), None)
            opening = stable_hash(first_user.tobytes()) if first_user is not None else None
            self._builder.exported(facts, roles, turn_ids, opening)
            sink = evaluation if split is Split.EVAL else train
            if split is Split.EVAL:
                self._builder.eval_rows += 1
            else:
                self._builder.train_rows += 1
            if sink is not None:
                await sink.add_line(line)
            if count % 500 == 0:
                # Let the heartbeat and the service's calls run between batches of CPU work.
                await asyncio.sleep(0)


def _write_record(spool: IO[bytes], header: bytes, turns: bytes, line: bytes) -> None:
    """Appends one spooled row: its JSON header, its turns as word ids, its output line."""
    spool.write(_RECORD_HEADER.pack(len(header), len(turns), len(line)))
    spool.write(header)
    spool.write(turns)
    spool.write(line)


def _read_records(spool: IO[bytes]) -> Iterator[tuple[bytes, bytes, bytes]]:
    while True:
        prefix = spool.read(_RECORD_HEADER.size)
        if not prefix:
            return
        header_length, turns_length, line_length = _RECORD_HEADER.unpack(prefix)
        yield spool.read(header_length), spool.read(turns_length), spool.read(line_length)


def _encode_turns(roles: list[str], turn_ids: list[array.array[int]]) -> bytes:
    parts = []
    for role, ids in zip(roles, turn_ids, strict=True):
        parts.append(_TURN_HEADER.pack(ROLE_CODES[role], len(ids)))
        parts.append(ids.tobytes())
    return b"".join(parts)


def _decode_turns(data: bytes) -> tuple[list[str], list[array.array[int]]]:
    roles: list[str] = []
    turn_ids: list[array.array[int]] = []
    position = 0
    while position < len(data):
        code, count = _TURN_HEADER.unpack_from(data, position)
        position += _TURN_HEADER.size
        ids = array.array("I")
        ids.frombytes(data[position : position + 4 * count])
        position += 4 * count
        roles.append(_ROLES[code])
        turn_ids.append(ids)
    return roles, turn_ids
