"""The quality report: counters filled while an export reads its rows, then the DatasetReport message.

The report's schema is the DatasetReport proto message itself: the same document is returned by GetExport, stored as
its JSON in dataset_exports.report, embedded in manifest.json and rendered to report.md, so there is one definition.
"""

from __future__ import annotations

import array
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from batch_service.converters import usage as usage_message
from batch_service.datasets.diversity import DiversityCounter
from batch_service.datasets.domain import CoverageCell, ExportSpec, GroupBy, RowFacts
from batch_service.datasets.near_duplicates import NUM_PERM, Clusters
from batch_service.domain import Usage
from convgen.conversation_rules import BLOCKING_RULES, WARNING_RULES
from convgen.rpc.convert import cost_breakdown
from convgen.v1 import dataset_pb2

# How much of the long lists the message carries (manifest.json has them whole).
MESSAGE_CLUSTERS = 100
MESSAGE_CLUSTER_KEYS = 20
MESSAGE_HOLES = 20
MANIFEST_HOLES = 1000

GROUP_BY_TO_PROTO = {
    GroupBy.NONE: dataset_pb2.SPLIT_GROUP_BY_NONE,
    GroupBy.PERSONA: dataset_pb2.SPLIT_GROUP_BY_PERSONA,
    GroupBy.EMOTIONAL_ARC: dataset_pb2.SPLIT_GROUP_BY_EMOTIONAL_ARC,
    GroupBy.TRAINING_TOPIC: dataset_pb2.SPLIT_GROUP_BY_TRAINING_TOPIC,
}


def median(histogram: Counter[int]) -> float:
    """The median of the values a histogram (value -> count) holds; 0 when empty."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    wanted = [(total - 1) // 2, total // 2]
    found: list[int] = []
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        while wanted and wanted[0] < seen:
            found.append(value)
            wanted.pop(0)
    return (found[0] + found[1]) / 2


def word_stats(histogram: Counter[int]) -> dataset_pb2.WordStats:
    """WordStats of a histogram of words per turn."""
    turns = sum(histogram.values())
    if not turns:
        return dataset_pb2.WordStats()
    return dataset_pb2.WordStats(
        turns=turns,
        min=min(histogram),
        median=median(histogram),
        mean=round(sum(v * n for v, n in histogram.items()) / turns, 3),
        max=max(histogram),
    )


@dataclass
class JobCoverageSum:
    """One job's coverage while its cells are read."""

    job_id: uuid.UUID
    combinations: int = 0
    delivered: int = 0
    items: int = 0
    exported: int = 0
    failed: int = 0
    cancelled: int = 0
    pending: int = 0
    dropped: int = 0
    outside_window: int = 0
    holes: list[dataset_pb2.CoverageHole] = field(default_factory=list)
    holes_total: int = 0

    def add(self, cell: CoverageCell, dropped: int) -> None:
        """Adds one combination, of which `dropped` selected conversations were not exported."""
        exported = cell.selected - dropped
        self.combinations += 1
        self.items += cell.items
        self.exported += exported
        self.failed += cell.failed
        self.cancelled += cell.cancelled
        self.pending += cell.pending
        self.dropped += dropped
        self.outside_window += cell.outside_window
        if exported > 0:
            self.delivered += 1
            return
        self.holes_total += 1
        if len(self.holes) < MANIFEST_HOLES:
            self.holes.append(
                dataset_pb2.CoverageHole(
                    persona_key=cell.persona_key,
                    arc_key=cell.arc_key,
                    topic_key=cell.topic_key,
                    failed=cell.failed,
                    cancelled=cell.cancelled,
                    dropped=dropped,
                    pending=cell.pending,
                    outside_window=cell.outside_window,
                )
            )

    def message(self) -> dataset_pb2.JobCoverage:
        """The job's coverage with every kept hole."""
        return dataset_pb2.JobCoverage(
            job_id=str(self.job_id),
            combinations_requested=self.combinations,
            combinations_delivered=self.delivered,
            items_requested=self.items,
            items_exported=self.exported,
            items_failed=self.failed,
            items_cancelled=self.cancelled,
            items_pending=self.pending,
            items_dropped=self.dropped,
            items_outside_window=self.outside_window,
            holes=self.holes,
            holes_total=self.holes_total,
        )


class ReportBuilder:
    """Accumulates an export's figures; build() makes the DatasetReport."""

    def __init__(self, spec: ExportSpec) -> None:
        self._spec = spec
        self.rule_hits: Counter[str] = Counter()
        # Usage sums; unpriced_conversations counts those whose cost is unknown (counted, never guessed).
        self.selected_usage = Usage()
        self.exported_usage = Usage()
        self.exact_groups: Counter[int] = Counter()
        self._turns: Counter[int] = Counter()
        self._words: dict[str, Counter[int]] = {"user": Counter(), "assistant": Counter()}
        self._models: Counter[str] = Counter()
        self._templates: Counter[uuid.UUID] = Counter()
        self._template_names: dict[uuid.UUID, str] = {}
        self.diversity = DiversityCounter(0)
        self.train_rows = 0
        self.eval_rows = 0
        self.train_groups = 0
        self.eval_groups = 0
        self._coverage: dict[uuid.UUID, JobCoverageSum] = {}
        self._clusters: Clusters | None = None
        self._cluster_keys: Callable[[int], str] = str

    def selected(self, row: RowFacts, rules: set[str]) -> None:
        """Counts a selected conversation's usage and the rules it broke."""
        self.selected_usage += row.usage
        self.rule_hits.update(rules)

    def begin_exported(self, vocabulary_size: int) -> None:
        """Prepares the diversity counters for words ids below vocabulary_size."""
        self.diversity = DiversityCounter(vocabulary_size)

    def exported(
        self,
        row: RowFacts,
        roles: Sequence[str],
        turn_words: Sequence[array.array[int]],
        first_user_turn_hash: int | None,
    ) -> None:
        """Counts an exported conversation (its turns as word ids): sizes, usage, model, template, diversity."""
        self.exported_usage += row.usage
        self._turns[len(roles)] += 1
        for role, ws in zip(roles, turn_words, strict=True):
            self._words[role][len(ws)] += 1
        self._models[row.model] += 1
        self._templates[row.template_id] += 1
        self._template_names[row.template_id] = row.template_name
        self.diversity.add(roles, turn_words, first_user_turn_hash)

    def coverage(self, cell: CoverageCell, dropped: int) -> None:
        """Counts one job combination."""
        job = self._coverage.get(cell.job_id)
        if job is None:
            job = self._coverage[cell.job_id] = JobCoverageSum(cell.job_id)
        job.add(cell, dropped)

    def clusters(self, clusters: Clusters, business_key_of: Callable[[int], str]) -> None:
        """Records the near-duplicate clusters (ids) and how to name their members."""
        self._clusters = clusters
        self._cluster_keys = business_key_of

    def build(self, template_hashes: dict[uuid.UUID, str], job_ids: Sequence[uuid.UUID]) -> dataset_pb2.DatasetReport:
        """The whole report (every cluster, up to MANIFEST_HOLES holes per job): what manifest.json holds."""
        spec = self._spec
        conversations = self.train_rows + self.eval_rows
        report = dataset_pb2.DatasetReport(
            counts=dataset_pb2.DatasetCounts(
                conversations=conversations,
                turns=sum(v * n for v, n in self._turns.items()),
                turns_min=min(self._turns) if self._turns else 0,
                turns_median=median(self._turns),
                turns_max=max(self._turns) if self._turns else 0,
                user_words_per_turn=word_stats(self._words["user"]),
                assistant_words_per_turn=word_stats(self._words["assistant"]),
            ),
            usage=dataset_pb2.UsageTotals(
                selected_usage=usage_message(self.selected_usage),
                selected_cost_usd=float(self.selected_usage.cost_usd),
                exported_usage=usage_message(self.exported_usage),
                exported_cost_usd=float(self.exported_usage.cost_usd),
                selected_unknown_cost=self.selected_usage.unpriced_conversations,
                exported_unknown_cost=self.exported_usage.unpriced_conversations,
                selected_cost_breakdown=cost_breakdown(self.selected_usage.cost_by_kind),
                exported_cost_breakdown=cost_breakdown(self.exported_usage.cost_by_kind),
            ),
            models=[dataset_pb2.NamedCount(name=m, count=n) for m, n in sorted(self._models.items())],
            validation=[
                dataset_pb2.ValidationRuleCount(rule=rule, blocking=rule in BLOCKING_RULES, conversations=count)
                for rule in (*BLOCKING_RULES, *WARNING_RULES)
                if (count := self.rule_hits.get(rule, 0))
            ],
            coverage=[self._coverage[j].message() for j in job_ids if j in self._coverage],
            duplicates=self._duplicates(),
            diversity=dataset_pb2.DiversityReport(
                distinct_1=round(self.diversity.distinct_1(), 6),
                distinct_2=round(self.diversity.distinct_2(), 6),
                vocabulary_size=self.diversity.vocabulary_size,
                repeated_first_user_turn_share=round(self.diversity.repeated_first_user_turn_share(), 6),
            ),
            split=dataset_pb2.SplitReport(
                train_rows=self.train_rows,
                eval_rows=self.eval_rows,
                eval_fraction=spec.eval_fraction,
                actual_eval_fraction=round(self.eval_rows / conversations, 6) if conversations else 0.0,
                group_by=GROUP_BY_TO_PROTO[spec.group_by],
                train_groups=self.train_groups,
                eval_groups=self.eval_groups,
                leakage_free=True,
                seed=spec.seed,
            ),
            templates=[
                dataset_pb2.TemplateFingerprint(
                    template_id=str(t),
                    template_name=self._template_names[t],
                    text_sha256=template_hashes.get(t, ""),
                    rows=n,
                )
                for t, n in sorted(self._templates.items(), key=lambda item: self._template_names[item[0]])
            ],
        )
        return report

    def _duplicates(self) -> dataset_pb2.DuplicateReport:
        groups = [n for n in self.exact_groups.values() if n > 1]
        clusters = self._clusters
        message = dataset_pb2.DuplicateReport(
            exact_duplicate_groups=len(groups),
            exact_duplicates=sum(n - 1 for n in groups),
            threshold=self._spec.near_duplicate_threshold,
            num_perm=NUM_PERM,
        )
        if clusters is None:
            return message
        message.near_duplicate_clusters = len(clusters.members)
        message.near_duplicates = sum(len(m) - 1 for m in clusters.members)
        message.lsh_bands = clusters.bands
        message.clusters.extend(
            dataset_pb2.DuplicateCluster(
                kept_business_key=self._cluster_keys(members[0]),
                business_keys=[self._cluster_keys(m) for m in members],
                size=len(members),
            )
            for members in clusters.members
        )
        return message


def trimmed(report: dataset_pb2.DatasetReport) -> dataset_pb2.DatasetReport:
    """The report as API responses carry it: the largest clusters and the first holes only."""
    small = dataset_pb2.DatasetReport()
    small.CopyFrom(report)
    largest = sorted(report.duplicates.clusters, key=lambda c: (-c.size, c.kept_business_key))[:MESSAGE_CLUSTERS]
    del small.duplicates.clusters[:]
    for cluster in largest:
        kept = small.duplicates.clusters.add()
        kept.CopyFrom(cluster)
        del kept.business_keys[MESSAGE_CLUSTER_KEYS:]
    for coverage in small.coverage:
        del coverage.holes[MESSAGE_HOLES:]
    return small
