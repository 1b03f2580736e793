"""Near-duplicate detection: MinHash signatures of word shingles, LSH banding, verified pairs, clusters.

Library choice: rensa (R-MinHash in Rust) rather than datasketch. datasketch hashes every shingle with SHA-1 in
Python and keeps 64-bit values; over 100,000 conversations (~60 million shingles) that alone takes minutes on this
machine, where rensa signs them in seconds and keeps 32-bit values (128 permutations = 512 bytes a conversation).
Its signatures are deterministic for a (num_perm, seed) pair, which the byte-identical exports rely on; its version
is pinned because its algorithm version decides the values.

The banding is done here, with numpy, one band at a time over all signatures after the first pass: rensa's (and
datasketch's) in-memory LSH index keeps a hash-table entry per band per conversation, about 1.3 KB a conversation at
16 bands (133 MB at 100,000, measured), and more for lower thresholds that need more bands; sorting one band's keys
at a time costs a few MB whatever the band count. Candidates (same band value) are verified against the threshold
with the signatures' estimated Jaccard similarity, so band collisions never cluster dissimilar conversations.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rensa import RMinHash

from batch_service.datasets.text_features import Vocabulary, shingle_hashes

NUM_PERM = 128
MINHASH_SEED = 1_305_013
# Weights of the banding choice: missing a pair costs more than a candidate the verification rejects.
FALSE_POSITIVE_WEIGHT = 0.05
FALSE_NEGATIVE_WEIGHT = 0.95
_INTEGRATION_STEPS = 100
# Conversations signed per rensa call.
_BATCH_ROWS = 1024


def _probability(similarity: float, bands: int, rows: int) -> float:
    """Chance that two signatures of this Jaccard similarity share at least one band."""
    return float(1 - (1 - similarity**rows) ** bands)


def _area(low: float, high: float, bands: int, rows: int, *, above: bool) -> float:
    """The area under (or, above, over) the candidate probability curve between low and high."""
    step = (high - low) / _INTEGRATION_STEPS
    total = 0.0
    for k in range(_INTEGRATION_STEPS):
        p = _probability(low + (k + 0.5) * step, bands, rows)
        total += (1 - p) if above else p
    return total * step


@functools.lru_cache(maxsize=64)
def lsh_shape(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) minimising the weighted false positive and false negative areas around threshold."""
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = _area(0.0, threshold, bands, rows, above=False)
            false_negative = _area(threshold, 1.0, bands, rows, above=True)
            error = FALSE_POSITIVE_WEIGHT * false_positive + FALSE_NEGATIVE_WEIGHT * false_negative
            if best is None or error < best[0]:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


@dataclass(frozen=True)
class Clusters:
    """Near-duplicate clusters: members of each (ids in insertion order, earliest first), earliest cluster first."""

    members: list[list[int]]
    bands: int
    rows: int
    candidate_pairs: int
    verified_pairs: int


class NearDuplicateIndex:
    """Collects signatures in insertion order, then finds the clusters of those similar above the threshold.

    Conversations come in as word ids and are signed in batches: their shingles hashed with numpy, their
    signatures computed by rensa from the flat buffer of shingle hashes in one call per batch.
    """

    def __init__(self, threshold: float, vocabulary: Vocabulary) -> None:
        self.threshold = threshold
        self._vocabulary = vocabulary
        self._signatures = array.array("I")
        self._exact: list[tuple[int, int]] = []
        self._pending = array.array("I")
        self._offsets = [0]
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the signatures."""
        return self._signatures.itemsize * len(self._signatures)

    def add(self, ids: Sequence[array.array[int]]) -> int:
        """Adds a conversation (the word ids of its turns, in order); returns its id (0, 1, 2, ...)."""
        for turn in ids:
            self._pending.extend(turn)
        self._offsets.append(len(self._pending))
        self._count += 1
        if len(self._offsets) > _BATCH_ROWS:
            self.flush()
        return self._count - 1

    def flush(self) -> None:
        """Signs the conversations added since the last flush."""
        if len(self._offsets) == 1:
            return
        flat = np.frombuffer(self._pending, dtype=np.uint32) if self._pending else np.empty(0, dtype=np.uint32)
        tokens, offsets = shingle_hashes(flat, np.array(self._offsets, dtype=np.int64), self._vocabulary.hashes())
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(tokens, offsets.tolist(), NUM_PERM, MINHASH_SEED)
        for row in matrix.to_rows():
            self._signatures.extend(row)
        self._pending = array.array("I")
        self._offsets = [0]

    def link_exact(self, earlier: int, later: int) -> None:
        """Records that two conversations are exact duplicates (they always end in one cluster)."""
        self._exact.append((earlier, later))

    def clusters(self) -> Clusters:
        """The clusters of conversations whose estimated Jaccard similarity reaches the threshold."""
        self.flush()
        count = len(self)
        bands, rows = lsh_shape(self.threshold)
        parent = np.arange(count, dtype=np.int64)
        if count == 0:
            return Clusters([], bands, rows, 0, 0)
        matrix = np.frombuffer(self._signatures, dtype=np.uint32).reshape(count, NUM_PERM)
        needed = int(np.ceil(self.threshold * NUM_PERM - 1e-9))
        candidates = verified = 0
        for band in range(bands):
            left, right = _band_candidates(matrix[:, band * rows : (band + 1) * rows])
            if left.size == 0:
                continue
            candidates += int(left.size)
            agree = (matrix[left] == matrix[right]).sum(axis=1)
            keep = agree >= needed
            verified += int(keep.sum())
            _union_pairs(parent, left[keep], right[keep])
        if self._exact:
            exact = np.array(self._exact, dtype=np.int64)
            _union_pairs(parent, exact[:, 0], exact[:, 1])
        return Clusters(_groups(parent), bands, rows, candidates, verified)


def _band_candidates(band: npt.NDArray[np.uint32]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pairs (earlier id, later id) of rows with the same band value: each row with its bucket's first and previous."""
    keys = _band_keys(band)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    # The first row of each run of equal keys.
    run_start = np.flatnonzero(np.concatenate(([True], ~same)))
    run_of = np.cumsum(np.concatenate(([True], ~same))) - 1
    first = order[run_start[run_of]]
    later = np.flatnonzero(np.concatenate(([False], same)))
    previous_pairs = (order[later - 1], order[later])
    first_pairs = (first[later], order[later])
    left = np.concatenate((previous_pairs[0], first_pairs[0])).astype(np.int64)
    right = np.concatenate((previous_pairs[1], first_pairs[1])).astype(np.int64)
    distinct = left != right
    return left[distinct], right[distinct]


def _band_keys(band: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint64]:
    """One 64-bit key per row from its band values (collisions only cost a rejected candidate)."""
    key = np.zeros(band.shape[0], dtype=np.uint64)
    multiplier = np.uint64(0x9E3779B97F4A7C15)
    for column in range(band.shape[1]):
        key = (key ^ band[:, column].astype(np.uint64)) * multiplier
        key ^= key >> np.uint64(29)
    return key


def _find(parent: npt.NDArray[np.int64], node: int) -> int:
    root = node
    while parent[root] != root:
        root = int(parent[root])
    while parent[node] != root:
        parent[node], node = root, int(parent[node])
    return root


def _union_pairs(parent: npt.NDArray[np.int64], left: npt.NDArray[np.int64], right: npt.NDArray[np.int64]) -> None:
    """Unions each pair; the smaller id (the earlier conversation) becomes the root."""
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        root_a, root_b = _find(parent, a), _find(parent, b)
        if root_a != root_b:
            low, high = (root_a, root_b) if root_a < root_b else (root_b, root_a)
            parent[high] = low


def _groups(parent: npt.NDArray[np.int64]) -> list[list[int]]:
    """The sets of two or more ids under one root, each in id order, ordered by their earliest id."""
    roots = np.array([_find(parent, i) for i in range(parent.size)], dtype=np.int64)
    order = np.argsort(roots, kind="stable")
    ordered = roots[order]
    groups: list[list[int]] = []
    start = 0
    for end in range(1, ordered.size + 1):
        if end == ordered.size or ordered[end] != ordered[start]:
            if end - start > 1:
                groups.append(sorted(order[start:end].tolist()))
            start = end
    groups.sort(key=lambda g: g[0])
    return groups
