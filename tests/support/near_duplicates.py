"""A model stand-in's corpus with planted near-duplicates: distinct conversations, plus light word edits of some.

Served through FakeMessagesApi(replies=corpus.reply): each distinct prompt gets the next conversation of the corpus
(a retry of the same prompt gets the same one), so a job of N items stores the N conversations. Which conversations
are edits of which is known (planted_pairs), and corpus.index_of(document) finds a stored conversation's entry by its
content, so a test can check what the near-duplicate report found.

Distinct conversations share what real ones share (a Zipf-distributed vocabulary and a pool of stock sentences:
greetings, advisor phrases) but their own sentences are their own; a planted copy changes about 1.5 words in 100
(substitutions, deletions, insertions), which keeps its word 3-gram Jaccard similarity to the original at
0.83 or more (mean 0.91 for 60 copies at seed 3), while distinct pairs stay under 0.1.
stream_conversations() writes the same kind of conversations one at a time, for datasets too big to hold.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

_SYLLABLES = [
    "ba", "be", "bi", "bo", "ca", "ce", "co", "da", "de", "di", "do", "fa", "fe", "fi", "ga", "go", "ha", "he",
    "hi", "jo", "ka", "ke", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe",
    "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "vi", "wa",
]  # fmt: skip
_EMOTIONS = ["worry", "hope", "relief", "doubt", "calm", "curiosity", "frustration", "trust", "resolve", "unease"]


class ConversationWriter:
    """Writes distinct conversations from a shared vocabulary and stock sentences, and light edits of them."""

    def __init__(self, rng: random.Random, *, vocabulary: int = 5000, edit_rate: float = 0.015) -> None:
        self._rng = rng
        self._words = self._vocabulary(vocabulary)
        self._cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(vocabulary)))
        self._stock = [self._sentence() for _ in range(120)]
        self.edit_rate = edit_rate

    def _vocabulary(self, size: int) -> list[str]:
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < size:
            word = "".join(self._rng.choice(_SYLLABLES) for _ in range(self._rng.randint(1, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        return words

    def _sentence(self) -> str:
        chosen = self._rng.choices(self._words, cum_weights=self._cumulative, k=self._rng.randint(8, 16))
        return " ".join(chosen).capitalize() + "."

    def _turn_text(self) -> str:
        parts = [
            self._rng.choice(self._stock) if self._rng.random() < 0.3 else self._sentence()
            for _ in range(self._rng.randint(3, 5))
        ]
        return " ".join(parts)

    def _emotion(self) -> dict[str, Any]:
        primary, secondary = self._rng.sample(_EMOTIONS, 2)
        return {"primary_emotion": primary, "secondary_emotion": secondary, "intensity": self._rng.randint(2, 8) / 10}

    def conversation(self, turns: int = 8) -> dict[str, Any]:
        """A new conversation that passes every validation rule."""
        return {
            "conversation_metadata": {
                "client_persona": self._sentence(),
                "session_context": self._sentence(),
                "conversation_phase": "initial consultation",
                "expected_outcome": self._sentence(),
            },
            "turns": [
                {
                    "turn_number": n,
                    "role": "user" if n % 2 else "assistant",
                    "content": self._turn_text(),
                    "emotional_context": self._emotion(),
                }
                for n in range(1, turns + 1)
            ],
        }

    def edited(self, original: dict[str, Any]) -> dict[str, Any]:
        """A copy with about edit_rate of its words substituted, deleted or inserted (the opening always edited)."""
        copy = json.loads(json.dumps(original))
        for number, turn in enumerate(copy["turns"]):
            edited: list[str] = []
            for word in turn["content"].split(" "):
                draw = self._rng.random()
                if draw < self.edit_rate * 0.6:
                    edited.append(self._rng.choice(self._words))
                elif draw < self.edit_rate * 0.8:
                    continue
                elif draw < self.edit_rate:
                    edited.extend([word, self._rng.choice(self._words)])
                else:
                    edited.append(word)
            if number == 0:
                # The first turn identifies an entry: it must differ from the original's.
                edited.insert(self._rng.randrange(len(edited) + 1), self._rng.choice(self._words))
            turn["content"] = " ".join(edited)
        return copy


class NearDuplicateCorpus:
    """distinct + planted conversations; entry k of planted_pairs (original, copy) is a light edit."""

    def __init__(
        self,
        *,
        distinct: int,
        planted: int,
        seed: int = 0,
        turns: int = 8,
        vocabulary: int = 5000,
        edit_rate: float = 0.015,
    ) -> None:
        rng = random.Random(seed)
        writer = ConversationWriter(rng, vocabulary=vocabulary, edit_rate=edit_rate)
        originals = iter([writer.conversation(turns) for _ in range(distinct)])
        # Each planted copy comes after its original: copies are spread over the second half of the corpus.
        sources = sorted(rng.sample(range(distinct), planted))
        slots = sorted(rng.sample(range(distinct // 2, distinct + planted), planted))
        copies = dict(zip(slots, sources, strict=True))
        self.documents: list[dict[str, Any]] = []
        self.planted_pairs: list[tuple[int, int]] = []
        position_of_original: dict[int, int] = {}
        waiting: list[int] = []
        while len(self.documents) < distinct + planted:
            position = len(self.documents)
            source = copies.get(position)
            if source is not None:
                waiting.append(source)
            ready = next((s for s in waiting if s in position_of_original), None)
            if ready is not None and (source is not None or len(position_of_original) == distinct):
                waiting.remove(ready)
                self.documents.append(writer.edited(self.documents[position_of_original[ready]]))
                self.planted_pairs.append((position_of_original[ready], position))
                continue
            position_of_original[len(position_of_original)] = position
            self.documents.append(next(originals))
        self._served: dict[str, int] = {}
        self._by_opening = {doc["turns"][0]["content"]: i for i, doc in enumerate(self.documents)}
        planted_ids = {i for pair in self.planted_pairs for i in pair}
        self.distinct_ids = [i for i in range(len(self.documents)) if i not in planted_ids]

    def __len__(self) -> int:
        return len(self.documents)

    def reply(self, body: Mapping[str, Any]) -> str:
        """The conversation for a request: the next unserved one for a new prompt, the same one for a repeat."""
        prompt = json.dumps(body.get("messages"), sort_keys=True)
        index = self._served.setdefault(prompt, len(self._served))
        if index >= len(self.documents):
            raise IndexError(f"the corpus has {len(self.documents)} conversations; request {index + 1} asks for more")
        return json.dumps(self.documents[index], ensure_ascii=False)

    def index_of(self, document: Mapping[str, Any]) -> int:
        """The corpus entry a stored conversation is (by its first turn, unique per entry)."""
        return self._by_opening[document["turns"][0]["content"]]


def stream_conversations(
    count: int, *, near_duplicate_share: float = 0.1, seed: int = 0, turns: int = 8
) -> Iterator[dict[str, Any]]:
    """count conversations, one at a time: about near_duplicate_share of them are light edits of one of the previous
    1,000 distinct ones."""
    rng = random.Random(seed)
    writer = ConversationWriter(rng)
    recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
    for _ in range(count):
        if recent and rng.random() < near_duplicate_share:
            yield writer.edited(rng.choice(recent))
            continue
        document = writer.conversation(turns)
        recent.append(document)
        yield document
