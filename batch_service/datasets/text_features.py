"""Text of a conversation as the quality report sees it: normalised words, shingles and stable hashes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from batch_service.datasets.formats import Turn

# Words: runs of letters or digits (any script), with inner apostrophes ("don't"); case and punctuation are ignored.
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
SHINGLE_WORDS = 3


def words(text: str) -> list[str]:
    """The normalised words of a text."""
    return _WORD.findall(text.lower())


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() of str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def normalised_text(turns: Sequence[Turn], turn_words: Sequence[list[str]]) -> str:
    """The whole conversation as role-tagged normalised words: equal for exact duplicates up to case and punctuation."""
    return "\n".join(f"{turn.role}: {' '.join(w)}" for turn, w in zip(turns, turn_words, strict=True))


def shingles(turn_words: Sequence[list[str]]) -> list[str]:
    """Word 3-gram shingles over the turns in order (a text shorter than 3 words is its own shingle)."""
    flat = [w for ws in turn_words for w in ws]
    if len(flat) < SHINGLE_WORDS:
        return [" ".join(flat)] if flat else []
    return [" ".join(flat[i : i + SHINGLE_WORDS]) for i in range(len(flat) - SHINGLE_WORDS + 1)]
