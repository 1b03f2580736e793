"""The pure parts of an export: line formats, the split, near-duplicate clustering, the diversity sketch, medians."""

from __future__ import annotations

import array
import random
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from batch_service.datasets.diversity import DiversityCounter, HyperLogLog
from batch_service.datasets.domain import GroupBy, RowFacts, SelectedConversation
from batch_service.datasets.formats import FormatRejected, bedrock_claude, chat_messages, convgen_lineage, sharegpt
from batch_service.datasets.near_duplicates import NearDuplicateIndex, lsh_shape
from batch_service.datasets.report import median
from batch_service.datasets.split import LeakageGuard, Split, SplitLeakage, assign, split_key
from batch_service.datasets.text_features import Vocabulary, shingle_hashes
from batch_service.domain import Usage
from convgen.catalog.models import Tier


def _row(**changes: Any) -> SelectedConversation:
    values: dict[str, Any] = {
        "pk": uuid.uuid4(),
        "business_key": uuid.uuid4(),
        "request_id": "r",
        "created_by": uuid.UUID(int=0),
        "job_id": uuid.uuid4(),
        "item_id": uuid.uuid4(),
        "persona_id": uuid.uuid4(),
        "persona_key": "p",
        "emotional_arc_id": uuid.uuid4(),
        "arc_key": "a",
        "training_topic_id": uuid.uuid4(),
        "topic_key": "t",
        "tier": Tier.TEMPLATE,
        "template_id": uuid.uuid4(),
        "template_name": "tpl",
        "processing_status": "completed",
        "raw_bucket": "b",
        "raw_key": "r",
        "final_bucket": "b",
        "final_key": "f",
        "turn_count": 2,
        "model": "m",
        "usage": Usage(input_tokens=1, output_tokens=1),
    }
    values.update(changes)
    return SelectedConversation(**values)


def _document(*roles: str) -> dict[str, Any]:
    turns = [{"turn_number": n, "role": role, "content": f"turn {n} by {role}"} for n, role in enumerate(roles, 1)]
    return {"turns": list(reversed(turns))}


def test_chat_and_sharegpt_follow_turn_numbers_after_the_system_prompt() -> None:
    document = _document("user", "assistant", "user", "assistant")
    chat = chat_messages(_row(), document, "SYS")
    assert list(chat) == ["messages"]
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert chat["messages"][1]["content"] == "turn 1 by user"
    shared = sharegpt(_row(), document, "SYS")
    assert [m["from"] for m in shared["conversations"]] == ["system", "human", "gpt", "human", "gpt"]


def test_bedrock_drops_a_final_user_turn() -> None:
    line = bedrock_claude(_row(), _document("user", "assistant", "user"), "SYS")
    assert line == {
        "system": "SYS",
        "messages": [
            {"role": "user", "content": "turn 1 by user"},
            {"role": "assistant", "content": "turn 2 by assistant"},
        ],
    }


@pytest.mark.parametrize(
    ("roles", "why"),
    [
        (("assistant", "user", "assistant"), "the first turn is the assistant's"),
        (("user", "user", "assistant"), "turns 1 and 2 are both user"),
        (("user", "assistant", "assistant"), "turns 2 and 3 are both assistant"),
        (("user",), "no turns left"),
    ],
)
def test_bedrock_refuses_what_cannot_be_made_valid(roles: tuple[str, ...], why: str) -> None:
    with pytest.raises(FormatRejected, match=why):
        bedrock_claude(_row(), _document(*roles), "SYS")


def test_the_split_is_a_pure_function_of_key_and_seed() -> None:
    keys = [f"conversation:{uuid.UUID(int=n)}" for n in range(20_000)]
    first = [assign(k, 7, 0.1) for k in keys]
    assert first == [assign(k, 7, 0.1) for k in keys]
    assert first != [assign(k, 8, 0.1) for k in keys]
    assert sum(s is Split.EVAL for s in first) / len(keys) == pytest.approx(0.1, abs=0.01)
    assert all(assign(k, 7, 0.0) is Split.TRAIN for k in keys[:1000])
    # A group key ignores the conversation: every row of a topic lands where the topic does.
    topic = uuid.uuid4()
    rows = [_row(training_topic_id=topic) for _ in range(50)]
    assert len({assign(split_key(r, GroupBy.TRAINING_TOPIC), 3, 0.5) for r in rows}) == 1
    assert len({split_key(r, GroupBy.NONE) for r in rows}) == 50


def test_the_leakage_guard_stops_a_group_in_both_splits() -> None:
    guard = LeakageGuard(GroupBy.PERSONA)
    guard.check("persona:a", Split.TRAIN, uuid.uuid4())
    guard.check("persona:a", Split.TRAIN, uuid.uuid4())
    guard.check("persona:b", Split.EVAL, uuid.uuid4())
    with pytest.raises(SplitLeakage, match="persona:a would be in both train and eval"):
        guard.check("persona:a", Split.EVAL, uuid.uuid4())
    assert (guard.groups(Split.TRAIN), guard.groups(Split.EVAL)) == (1, 1)


def test_lsh_shape_of_the_default_threshold() -> None:
    assert lsh_shape(0.8) == (16, 8)
    bands, rows = lsh_shape(0.5)
    assert bands * rows <= 128
    assert bands > 16


def _add(index: NearDuplicateIndex, vocabulary: Vocabulary, text: str) -> int:
    return index.add([vocabulary.ids(text)])


def test_clusters_keep_the_earliest_and_verify_candidates() -> None:
    vocabulary = Vocabulary()
    index = NearDuplicateIndex(0.8, vocabulary)
    rng = random.Random(1)
    words = [f"w{n}" for n in range(3000)]
    base = [" ".join(rng.choice(words) for _ in range(300)) for _ in range(30)]
    ids = [_add(index, vocabulary, text) for text in base]
    edited = base[4].split()
    edited[100] = "changed"
    copy = _add(index, vocabulary, " ".join(edited))
    exact = _add(index, vocabulary, base[9].upper() + " !")
    clusters = index.clusters()
    assert clusters.members == [[ids[4], copy], [ids[9], exact]]
    assert (clusters.bands, clusters.rows) == (16, 8)


def test_shingles_of_short_and_empty_conversations() -> None:
    vocabulary = Vocabulary()
    rows = [vocabulary.ids(t) for t in ("one two three four", "", "solo", "a pair")]
    flat = np.frombuffer(b"".join(r.tobytes() for r in rows), dtype=np.uint32)
    offsets = np.array([0, 4, 4, 5, 7], dtype=np.int64)
    tokens, token_offsets = shingle_hashes(flat, offsets, vocabulary.hashes())
    assert token_offsets.tolist() == [0, 2, 2, 3, 4]
    assert len(set(tokens.tolist())) == 4


def test_hyperloglog_is_within_three_percent() -> None:
    sketch = HyperLogLog()
    for start in range(0, 300_000, 100_000):
        sketch.add(np.arange(start, start + 100_000, dtype=np.uint64))
    sketch.add(np.arange(0, 50_000, dtype=np.uint64))
    assert sketch.estimate() == pytest.approx(300_000, rel=0.03)
    small = HyperLogLog()
    small.add(np.arange(100, dtype=np.uint64))
    assert small.estimate() == pytest.approx(100, rel=0.05)


def test_diversity_counts() -> None:
    counter = DiversityCounter(10)
    ids = [array.array("I", values) for values in ([0, 1, 2], [3, 4, 3, 4], [0, 1, 2], [5])]
    counter.add(["user", "assistant", "user", "assistant"], ids, 11)
    counter.add(["user", "assistant"], [array.array("I", [0, 1]), array.array("I", [3, 4])], 11)
    counter.add(["user", "assistant"], [array.array("I", [6]), array.array("I", [7])], 12)
    assert counter.vocabulary_size == 8
    # Assistant words: 3 4 3 4 | 5 | 3 4 | 7 -> 4 distinct of 8.
    assert counter.distinct_1() == pytest.approx(4 / 8)
    # Bigrams within turns: (3,4) (4,3) (3,4) | (3,4) -> 2 distinct of 4.
    assert counter.distinct_2() == pytest.approx(2 / 4, abs=0.01)
    assert counter.repeated_first_user_turn_share() == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("values", "expected"), [([], 0.0), ([5], 5.0), ([1, 2], 1.5), ([1, 1, 1, 9], 1.0), ([3, 1, 2, 10, 7], 3.0)]
)
def test_median_of_a_histogram(values: list[int], expected: float) -> None:
    assert median(Counter(values)) == expected


def test_usage_sums_by_kind_and_an_unknown_cost_is_counted_not_added() -> None:
    usage = Usage()
    known = RowFacts.of(
        _row(
            usage=Usage(
                input_tokens=10,
                cache_creation_1h_input_tokens=7,
                cost_usd=Decimal("0.012345"),
                input_cost_usd=Decimal("0.000020"),
                cache_write_1h_cost_usd=Decimal("0.000028"),
            )
        )
    )
    unknown = RowFacts.of(_row(usage=Usage(input_tokens=5, unpriced_conversations=1)))
    for facts in (known, unknown, RowFacts.from_json(unknown.to_json()), RowFacts.from_json(known.to_json())):
        usage += facts.usage  # what the report builder sums
    assert (usage.cost_usd, usage.unpriced_conversations, usage.input_tokens) == (Decimal("0.024690"), 2, 30)
    assert (usage.cache_creation_1h_input_tokens, usage.cache_write_1h_cost_usd) == (14, Decimal("0.000056"))
    assert convgen_lineage(_row(usage=Usage(unpriced_conversations=1)), {"turns": []}, "")["cost_usd"] is None
    line = convgen_lineage(_row(usage=known.usage), {"turns": []}, "")
    assert (line["cost_usd"], line["cost_by_kind_usd"]["cache_write_1h"]) == ("0.012345", "0.000028")
    assert line["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 7}
    assert line["usage"]["cache_creation_input_tokens"] == 7
