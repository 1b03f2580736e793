"""Text of a conversation as the quality report sees it: normalised words as ids of one export-wide vocabulary.

Each distinct word is hashed once (a stable 64-bit hash, the same in every process and export); a conversation is
then a few arrays of word ids, from which shingles, exact-duplicate hashes and diversity counts are computed with
numpy instead of per-word Python work (100,000 conversations are ~50 million words).
"""

from __future__ import annotations

import array
import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# Words: runs of letters, digits or underscores, with inner apostrophes ("don't"); case and punctuation are ignored.
_WORD = re.compile(r"\w+(?:['’]\w+)*")
ROLE_CODES = {"user": 0, "assistant": 1}


def words(text: str) -> list[str]:
    """The normalised words of a text."""
    return _WORD.findall(text.lower())


def stable_hash(data: bytes | str) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() of str is salted per process)."""
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


class Vocabulary:
    """Word → id (in order of first sight), and each word's stable hash by id."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._hashes = array.array("Q")

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self, text: str) -> array.array[int]:
        """The ids of a text's normalised words (new words are added)."""
        found = self._ids
        tokens = words(text)
        ids = [found.get(w, -1) for w in tokens]
        if -1 in ids:
            for position, word in enumerate(tokens):
                if ids[position] == -1:
                    ids[position] = found.get(word, -1)
                    if ids[position] == -1:
                        ids[position] = found[word] = len(found)
                        self._hashes.append(stable_hash(word))
        return array.array("I", ids)

    def hashes(self) -> npt.NDArray[np.uint64]:
        """Each word's stable hash, indexed by id."""
        return np.frombuffer(self._hashes, dtype=np.uint64) if self._hashes else np.empty(0, dtype=np.uint64)


def conversation_hash(roles: Sequence[str], turn_ids: Sequence[array.array[int]]) -> int:
    """A hash of the whole conversation's normalised words and roles: equal for exact duplicates."""
    digest = hashlib.blake2b(digest_size=8)
    for role, ids in zip(roles, turn_ids, strict=True):
        digest.update(bytes((ROLE_CODES.get(role, 2),)))
        digest.update(len(ids).to_bytes(4, "big"))
        digest.update(ids.tobytes())
    return int.from_bytes(digest.digest(), "big")


def mix(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: spreads keys over all 64 bits."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _rotate(values: npt.NDArray[np.uint64], bits: int) -> npt.NDArray[np.uint64]:
    return (values << np.uint64(bits)) | (values >> np.uint64(64 - bits))


def shingle_hashes(
    flat_ids: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64], word_hashes: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Hashes of the word 3-gram shingles of many conversations at once, and the offsets of each one's shingles.

    Conversation r is flat_ids[offsets[r]:offsets[r + 1]]; one with fewer than 3 words is one shingle of its words.
    """
    rows = offsets.size - 1
    lengths = np.diff(offsets)
    hashed = word_hashes[flat_ids] if flat_ids.size else np.empty(0, dtype=np.uint64)
    row_of = np.repeat(np.arange(rows), lengths)
    position = np.arange(flat_ids.size)
    whole = position + 2 < offsets[1:][row_of]
    following = np.concatenate((hashed[1:], np.zeros(1, dtype=np.uint64)))
    after_next = np.concatenate((hashed[2:], np.zeros(2, dtype=np.uint64)))
    tokens = mix(hashed ^ _rotate(following, 21) ^ _rotate(after_next, 42))[whole]
    token_rows = row_of[whole]
    short = np.flatnonzero((lengths > 0) & (lengths < 3))
    if short.size:
        first = offsets[short]
        second = np.where(lengths[short] == 2, hashed[np.minimum(first + 1, hashed.size - 1)], np.uint64(0))
        tokens = np.concatenate((tokens, mix(hashed[first] ^ _rotate(second, 21))))
        token_rows = np.concatenate((token_rows, short))
        order = np.argsort(token_rows, kind="stable")
        tokens, token_rows = tokens[order], token_rows[order]
    counts = np.bincount(token_rows, minlength=rows)
    return tokens, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
