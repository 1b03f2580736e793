"""Dataset exports: their states, the validated request (the spec) and the rows the store returns."""

from __future__ import annotations

import uuid
from dataclasses import astuple, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from batch_service.domain import Usage
from convgen.catalog.models import Tier

DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.8
MAX_EVAL_FRACTION = 0.5


class ExportState(StrEnum):
    """Lifecycle of an export; the value is what dataset_exports.state stores."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ExportFormat(StrEnum):
    """The JSON Lines shape of an exported conversation."""

    CHAT_MESSAGES = "chat_messages"
    SHAREGPT = "sharegpt"
    BEDROCK_CLAUDE = "bedrock_claude"
    CONVGEN = "convgen"


class GroupBy(StrEnum):
    """What the train/eval split keeps together."""

    NONE = "none"
    PERSONA = "persona"
    EMOTIONAL_ARC = "emotional_arc"
    TRAINING_TOPIC = "training_topic"


@dataclass(frozen=True)
class Selection:
    """Which stored conversations an export reads: completed items of the jobs, narrowed by the filters."""

    job_ids: tuple[uuid.UUID, ...]
    tiers: tuple[Tier, ...] = ()
    persona_ids: tuple[uuid.UUID, ...] = ()
    emotional_arc_ids: tuple[uuid.UUID, ...] = ()
    training_topic_ids: tuple[uuid.UUID, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    include_running: bool = False


@dataclass(frozen=True)
class ExportSpec:
    """A validated CreateExport request, as stored in dataset_exports.spec."""

    selection: Selection
    format: ExportFormat
    system_prompt: str
    eval_fraction: float = 0.0
    group_by: GroupBy = GroupBy.NONE
    seed: int = 0
    drop_near_duplicates: bool = False
    near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD
    report_only: bool = False

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object."""
        s = self.selection
        return {
            "selection": {
                "job_ids": [str(i) for i in s.job_ids],
                "tiers": [t.value for t in s.tiers],
                "persona_ids": [str(i) for i in s.persona_ids],
                "emotional_arc_ids": [str(i) for i in s.emotional_arc_ids],
                "training_topic_ids": [str(i) for i in s.training_topic_ids],
                "created_after": s.created_after.isoformat() if s.created_after else None,
                "created_before": s.created_before.isoformat() if s.created_before else None,
                "include_running": s.include_running,
            },
            "format": self.format.value,
            "system_prompt": self.system_prompt,
            "eval_fraction": self.eval_fraction,
            "group_by": self.group_by.value,
            "seed": self.seed,
            "drop_near_duplicates": self.drop_near_duplicates,
            "near_duplicate_threshold": self.near_duplicate_threshold,
            "report_only": self.report_only,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportSpec:
        """The spec from its JSON object."""
        s = data["selection"]
        return cls(
            selection=Selection(
                job_ids=tuple(uuid.UUID(i) for i in s["job_ids"]),
                tiers=tuple(Tier(t) for t in s["tiers"]),
                persona_ids=tuple(uuid.UUID(i) for i in s["persona_ids"]),
                emotional_arc_ids=tuple(uuid.UUID(i) for i in s["emotional_arc_ids"]),
                training_topic_ids=tuple(uuid.UUID(i) for i in s["training_topic_ids"]),
                created_after=datetime.fromisoformat(s["created_after"]) if s["created_after"] else None,
                created_before=datetime.fromisoformat(s["created_before"]) if s["created_before"] else None,
                include_running=bool(s["include_running"]),
            ),
            format=ExportFormat(data["format"]),
            system_prompt=data["system_prompt"],
            eval_fraction=float(data["eval_fraction"]),
            group_by=GroupBy(data["group_by"]),
            seed=int(data["seed"]),
            drop_near_duplicates=bool(data["drop_near_duplicates"]),
            near_duplicate_threshold=float(data["near_duplicate_threshold"]),
            report_only=bool(data["report_only"]),
        )


@dataclass(frozen=True)
class ExportFile:
    """A written file of an export."""

    name: str
    bucket: str
    key: str
    uri: str
    bytes: int
    rows: int
    sha256: str
    content_type: str

    def to_json(self) -> dict[str, Any]:
        """The file as a JSON object (manifest.json and dataset_exports.files)."""
        return {
            "name": self.name,
            "bucket": self.bucket,
            "key": self.key,
            "uri": self.uri,
            "bytes": self.bytes,
            "rows": self.rows,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFile:
        """The file from its JSON object."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DroppedRow:
    """A selected conversation that was not exported, and why."""

    business_key: uuid.UUID
    pk: uuid.UUID
    reason: str

    @property
    def kind(self) -> str:
        """The kind of reason, the part before the first ':' (near_duplicate_of counts as near_duplicate)."""
        head = self.reason.split(":", 1)[0]
        return "near_duplicate" if head == "near_duplicate_of" else head

    def to_json(self) -> dict[str, str]:
        """The dropped row as a JSON object."""
        return {"business_key": str(self.business_key), "pk": str(self.pk), "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> DroppedRow:
        """The dropped row from its JSON object."""
        return cls(uuid.UUID(data["business_key"]), uuid.UUID(data["pk"]), data["reason"])


@dataclass(frozen=True)
class ExportResult:
    """What a finished export run produced."""

    selected: int
    exported_train: int
    exported_eval: int
    dropped_by_reason: dict[str, int]
    files: list[ExportFile]
    report: dict[str, Any]
    dropped_sample: list[DroppedRow]


@dataclass(frozen=True)
class ExportRow:
    """A dataset_exports row."""

    id: uuid.UUID
    request_id: str | None
    state: ExportState
    spec: ExportSpec
    selected: int
    processed: int
    exported_train: int
    exported_eval: int
    dropped_by_reason: dict[str, int]
    files: list[ExportFile]
    report: dict[str, Any] | None
    dropped_sample: list[DroppedRow]
    error_code: str | None
    error_message: str | None
    runs: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def dropped(self) -> int:
        """Conversations not exported."""
        return sum(self.dropped_by_reason.values())


@dataclass(frozen=True)
class SelectedConversation:
    """One conversation of an export's selection, in the order rows are exported."""

    pk: uuid.UUID
    business_key: uuid.UUID
    request_id: str
    created_by: uuid.UUID
    job_id: uuid.UUID
    item_id: uuid.UUID
    persona_id: uuid.UUID
    persona_key: str
    emotional_arc_id: uuid.UUID
    arc_key: str
    training_topic_id: uuid.UUID
    topic_key: str
    tier: Tier
    template_id: uuid.UUID
    template_name: str
    processing_status: str
    raw_bucket: str
    raw_key: str
    final_bucket: str
    final_key: str
    turn_count: int
    model: str
    # Tokens and cost by kind; a cost the price table did not know is not in it (usage.unpriced_conversations is 1).
    usage: Usage
    validation_warnings: list[str] = field(default_factory=list)
    created_at: datetime | None = None


@dataclass(frozen=True)
class CoverageCell:
    """One persona × arc × topic combination of a job: its items by outcome within the selection."""

    job_id: uuid.UUID
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    persona_key: str
    arc_key: str
    topic_key: str
    items: int
    selected: int
    failed: int
    cancelled: int
    pending: int
    outside_window: int


@dataclass(frozen=True)
class RowFacts:
    """What the report counts of a conversation: its keys, model, template, tokens and cost."""

    pk: uuid.UUID
    business_key: uuid.UUID
    model: str
    template_id: uuid.UUID
    template_name: str
    usage: Usage

    @classmethod
    def of(cls, row: SelectedConversation) -> RowFacts:
        """The facts of a selected conversation."""
        return cls(
            pk=row.pk,
            business_key=row.business_key,
            model=row.model,
            template_id=row.template_id,
            template_name=row.template_name,
            usage=row.usage,
        )

    def to_json(self) -> list[Any]:
        """A compact JSON array (one per spooled row); amounts as strings, exact."""
        usage = [str(v) if isinstance(v, Decimal) else v for v in astuple(self.usage)]
        return [str(self.pk), str(self.business_key), self.model, str(self.template_id), self.template_name, *usage]

    @classmethod
    def from_json(cls, data: list[Any]) -> RowFacts:
        """The facts from their JSON array."""
        usage: list[Any] = [
            Decimal(v) if f.type == "Decimal" else v for f, v in zip(fields(Usage), data[5:], strict=True)
        ]
        return cls(
            pk=uuid.UUID(data[0]),
            business_key=uuid.UUID(data[1]),
            model=data[2],
            template_id=uuid.UUID(data[3]),
            template_name=data[4],
            usage=Usage(*usage),
        )
