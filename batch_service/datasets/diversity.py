"""Lexical diversity of the exported rows in bounded memory: distinct-1, distinct-2, vocabulary, repeated openings.

Words come as ids of the export's vocabulary (see text_features), so the vocabulary and the distinct words are
boolean arrays indexed by id. Distinct bigrams can number tens of millions, so they are counted with a HyperLogLog
sketch (2^14 registers, standard error ~0.8%) updated with numpy in batches, never as a set.
"""

from __future__ import annotations

import array
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from batch_service.datasets.text_features import mix

_PRECISION = 14
_REGISTERS = 1 << _PRECISION
_FLUSH_IDS = 1 << 20
# A separator between turns: bigrams never span two turns.
_BREAK = 0xFFFFFFFF


class HyperLogLog:
    """Estimates how many distinct 64-bit keys were added."""

    def __init__(self) -> None:
        self._registers = np.zeros(_REGISTERS, dtype=np.uint8)

    def add(self, keys: npt.NDArray[np.uint64]) -> None:
        """Adds a batch of uint64 keys."""
        if keys.size == 0:
            return
        hashed = mix(keys.astype(np.uint64))
        index = (hashed >> np.uint64(64 - _PRECISION)).astype(np.int64)
        rest = (hashed << np.uint64(_PRECISION)) | np.uint64(1 << (_PRECISION - 1))
        # Rank = leading zeros of the remaining bits + 1; log2 of the float is exact enough away from 2^k edges.
        rank = (64 - np.floor(np.log2(rest.astype(np.float64)))).astype(np.uint8)
        np.maximum.at(self._registers, index, rank)

    def estimate(self) -> float:
        """The estimated distinct count (with the small-range correction)."""
        m = float(_REGISTERS)
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.power(2.0, -self._registers.astype(np.float64))))
        zeros = int(np.count_nonzero(self._registers == 0))
        if raw <= 2.5 * m and zeros:
            return m * float(np.log(m / zeros))
        return raw


class DiversityCounter:
    """Accumulates the diversity figures of conversations given as word ids of the export's vocabulary."""

    def __init__(self, vocabulary_size: int) -> None:
        self._seen = np.zeros(vocabulary_size, dtype=np.bool_)
        self._assistant_seen = np.zeros(vocabulary_size, dtype=np.bool_)
        self._assistant_total = 0
        self._bigram_total = 0
        self._pending_words = array.array("I")
        self._pending_assistant = array.array("I")
        self._bigrams = HyperLogLog()
        self._openings: Counter[int] = Counter()
        self.conversations = 0

    def add(self, roles: Sequence[str], turn_ids: Sequence[array.array[int]], first_user_turn_hash: int | None) -> None:
        """Counts one conversation: every turn's words into the vocabulary, assistant turns into distinct-n."""
        self.conversations += 1
        for role, ids in zip(roles, turn_ids, strict=True):
            self._pending_words.extend(ids)
            if role != "assistant" or not ids:
                continue
            self._assistant_total += len(ids)
            self._bigram_total += len(ids) - 1
            self._pending_assistant.extend(ids)
            self._pending_assistant.append(_BREAK)
        if first_user_turn_hash is not None:
            self._openings[first_user_turn_hash] += 1
        if len(self._pending_words) >= _FLUSH_IDS:
            self._flush()

    def _flush(self) -> None:
        if self._pending_words:
            self._seen[np.frombuffer(self._pending_words, dtype=np.uint32)] = True
            self._pending_words = array.array("I")
        if self._pending_assistant:
            ids = np.frombuffer(self._pending_assistant, dtype=np.uint32).astype(np.uint64)
            first, second = ids[:-1], ids[1:]
            words = ids[ids != _BREAK]
            self._assistant_seen[words.astype(np.int64)] = True
            keys = (first << np.uint64(32)) | second
            self._bigrams.add(keys[(first != _BREAK) & (second != _BREAK)])
            self._pending_assistant = array.array("I")

    @property
    def vocabulary_size(self) -> int:
        """Distinct words over all turns."""
        self._flush()
        return int(np.count_nonzero(self._seen))

    def distinct_1(self) -> float:
        """Distinct assistant words / assistant words."""
        self._flush()
        return int(np.count_nonzero(self._assistant_seen)) / self._assistant_total if self._assistant_total else 0.0

    def distinct_2(self) -> float:
        """Estimated distinct assistant bigrams / assistant bigrams (capped at 1)."""
        self._flush()
        if not self._bigram_total:
            return 0.0
        return min(1.0, self._bigrams.estimate() / self._bigram_total)

    def repeated_first_user_turn_share(self) -> float:
        """Share of conversations whose first user turn is the same as at least one other's."""
        if not self.conversations:
            return 0.0
        repeated = sum(count for count in self._openings.values() if count > 1)
        return repeated / self.conversations
