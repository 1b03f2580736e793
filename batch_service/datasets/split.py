"""The train/eval split: a pure function of (business key or group value, seed), and the leakage check."""

from __future__ import annotations

import hashlib
import uuid
from enum import IntEnum

from batch_service.datasets.domain import GroupBy, SelectedConversation
from convgen.errors import FailedPrecondition

_SCALE = float(1 << 64)


class Split(IntEnum):
    """Which file a row goes to."""

    TRAIN = 0
    EVAL = 1


class SplitLeakage(FailedPrecondition):
    """A group value would be in both splits."""

    default_reason = "SPLIT_LEAKAGE"


def split_key(row: SelectedConversation, group_by: GroupBy) -> str:
    """What the split hashes: the group value, or the business key without a group."""
    if group_by is GroupBy.PERSONA:
        return f"persona:{row.persona_id}"
    if group_by is GroupBy.EMOTIONAL_ARC:
        return f"emotional_arc:{row.emotional_arc_id}"
    if group_by is GroupBy.TRAINING_TOPIC:
        return f"training_topic:{row.training_topic_id}"
    return f"conversation:{row.business_key}"


def assign(key: str, seed: int, eval_fraction: float) -> Split:
    """EVAL when the seeded hash of key, read as a fraction of 2^64, is below eval_fraction."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / _SCALE
    return Split.EVAL if position < eval_fraction else Split.TRAIN


class LeakageGuard:
    """Remembers each group value's split; a second split for a value fails the export."""

    def __init__(self, group_by: GroupBy) -> None:
        self.group_by = group_by
        self._splits: dict[str, Split] = {}

    def check(self, key: str, split: Split, business_key: uuid.UUID) -> None:
        """Records (key, split); raises SplitLeakage when key was already in the other split."""
        if self.group_by is GroupBy.NONE:
            return
        previous = self._splits.setdefault(key, split)
        if previous is not split:
            raise SplitLeakage(
                f"group {key} would be in both train and eval (conversation {business_key}); the export is stopped "
                "so that no eval conversation shares its group with a training one"
            )

    def groups(self, split: Split) -> int:
        """Distinct group values in a split."""
        return sum(1 for s in self._splits.values() if s is split)
