"""Names and keys with SQL metacharacters, quotes, emoji, RTL text, NUL bytes and extreme lengths are stored and read
back byte for byte (GetBatchJob, ListBatchJobs, GetConversation, ListConversations and the database row), or
rejected with INVALID_ARGUMENT naming the field, exactly as the documented rules predict:

- CreateBatchJob.name: at most 200 characters, no NUL; empty gets a default name.
- CreateBatchJob.request_id and GenerateConversation.request_id: at most 200 characters, no NUL, printable only
  (str.isprintable); a repeat returns what the first request made; an empty GenerateConversation request_id means
  "no idempotency" and is stored as anonymous/{uuid}.
- created_by: a UUID; empty means the nil UUID; it is read back in canonical (lower-case) form.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from convgen.db.database import Database
from convgen.v1 import batch_pb2, common_pb2, generation_pb2
from tests.bad_input import strategies as s
from tests.bad_input.world import RPCS, SCALE, World, assert_healthy, print_report, send
from tests.support.postgres import PostgresServer
from tests.support.services import running_services, test_settings

T = TypeVar("T")
LIMIT = 200
TOTALS = s.Tally("stored verbatim")

# Hand-picked values; every one is also an explicit example of the properties below.
VERBATIM_CASES = [
    "'; DROP TABLE batch_jobs; --",
    "Robert'); DROP TABLE conversations;--",
    "$1",
    "$1 $2 $$ $tag$ body $tag$",
    "\\",
    "\\\\",
    "back\\slash \\' \\x00 \\n",
    "C:\\Users\\x\\..\\..\\Windows",
    "'",
    "''",
    '"',
    "\"quoted\" and 'single'",
    "`backtick`",
    "%",
    "_%_",
    "%s %d %(name)s {0} {}",
    "😀",
    "👩\u200d👩\u200d👧\u200d👦 family",
    "שלום עולם",
    "مرحبا بالعالم",
    "mixed English עברית العربية",
    "\u202eRTL override",
    "\u200b zero width",
    "\ufeffBOM",
    "e\u0301 combining",
    "NULL",
    "null",
    " leading and trailing ",
    "tab\there",
    "line\nbreak",
    "crlf\r\n",
    "\x7f delete",
    "a" * (LIMIT - 1),
    "a" * LIMIT,
    "😀" * LIMIT,
    "a" * (LIMIT + 1),
    "😀" * (LIMIT + 1),
    "\x00",
    "nul\x00inside",
    "x" * LIMIT + "\x00",
]


@dataclass
class Store:
    """Services on their own database, what was accepted per idempotency key, and the tally."""

    world: World
    db: Database
    jobs_by_request_id: dict[str, str] = field(default_factory=dict)
    conversations_by_request_id: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Store({self.world.tally.total} requests so far)"


@pytest.fixture(scope="module")
async def store(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """Services on a fresh database for the module; prints the tally of requests at the end."""
    dsn = await postgres.create_database()
    data_dir = tmp_path_factory.mktemp("verbatim-data")
    try:
        async with running_services(test_settings(dsn, data_dir)) as services:
            world = World(services, dsn, data_dir, {}, TOTALS)
            job = await services.batch_stub.CreateBatchJob(job_request(name="anchor", request_id=""))
            world.known["@job:queued"] = job.id
            stored = await services.generation_stub.GenerateConversation(conversation_request("bad-input-world-0", ""))
            world.known["@conversation:pk"] = stored.pk
            db = await Database.connect(dsn, min_size=1, max_size=2)
            try:
                yield Store(world, db)
            finally:
                await db.close()
            await assert_healthy(world)
    finally:
        await postgres.drop_database(dsn)
        print_report(request, TOTALS.render())


def verbatim_settings(examples: int) -> Callable[[T], T]:
    """Scaled examples, no deadline, no example database; the module fixture is shared on purpose."""
    chosen: Callable[[T], T] = settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    return chosen


def texts() -> st.SearchStrategy[str]:
    """Any text (all of Unicode but surrogates), hostile text, and lengths around the limit."""
    return st.one_of(
        st.text(max_size=40),
        st.text(min_size=LIMIT - 2, max_size=LIMIT + 2),
        st.sampled_from(s.NASTY_STRINGS + VERBATIM_CASES),
        st.builds(lambda unit, n: unit * n, st.sampled_from(["a", "é", "😀", "'", "\\", "\x00"]), st.integers(1, 210)),
    )


def job_request(*, name: str, request_id: str, created_by: str = "") -> batch_pb2.CreateBatchJobRequest:
    """A valid one-item job, not started, with the given name, request_id and created_by."""
    return batch_pb2.CreateBatchJobRequest(
        name=name,
        request_id=request_id,
        created_by=created_by,
        auto_start=False,
        combination=batch_pb2.Combination(
            persona_ids=[s.SEED_PERSONA],
            emotional_arc_ids=[s.SEED_ARC],
            training_topic_ids=[s.SEED_TOPIC],
            tier=common_pb2.TIER_TEMPLATE,
        ),
    )


def conversation_request(request_id: str, created_by: str) -> generation_pb2.GenerateConversationRequest:
    """A valid GenerateConversation with the given request_id and created_by."""
    return generation_pb2.GenerateConversationRequest(
        parameters=common_pb2.GenerationParameters(
            persona_id=s.SEED_PERSONA,
            emotional_arc_id=s.SEED_ARC,
            training_topic_id=s.SEED_TOPIC,
            tier=common_pb2.TIER_TEMPLATE,
        ),
        request_id=request_id,
        created_by=created_by,
    )


def text_problem(value: str) -> str | None:
    """Why check_text rejects a name (None when it is accepted)."""
    if len(value) > LIMIT:
        return f"is {len(value)} characters long; the limit is {LIMIT}"
    if "\x00" in value:
        return "contains a NUL character, which cannot be stored"
    return None


def request_id_problem(value: str) -> str | None:
    """Why check_request_id rejects an idempotency key (None when it is accepted)."""
    problem = text_problem(value)
    if problem is None and value and not value.isprintable():
        return "must contain printable characters only"
    return problem


CANONICAL = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def created_by_values() -> st.SearchStrategy[str]:
    """created_by: empty, canonical (either case), or clearly not a UUID (not one of the lenient spellings)."""
    return st.one_of(
        st.just(""),
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        s.garbage_text().filter(lambda v: v and not CANONICAL.fullmatch(v) and not _lenient_uuid(v)),
    )


def _lenient_uuid(value: str) -> bool:
    """True for text uuid.UUID parses although it is not a canonical UUID (see test_known_gap_...)."""
    if len(value) != 36 or CANONICAL.fullmatch(value):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def call(store: Store, name: str, request: Message) -> s.Answer:
    """Sends one request and counts its answer."""
    answer = await send(store.world, RPCS[name], request)
    store.world.tally.add(name, answer)
    return answer


def assert_rejected(answer: s.Answer, expected: dict[str, str]) -> None:
    """INVALID_ARGUMENT naming exactly the expected fields, each with the expected description."""
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, f"{answer.code.name} {answer.message[:300]!r}"
    got = {v.field: v.description for v in answer.violations()}
    assert got == expected, got
    for name in expected:
        assert answer.message.startswith(name) or f"; {name}:" in answer.message, answer.message


# --- batch jobs ------------------------------------------------------------------------------------------------------


async def assert_job_reads_back(store: Store, job_id: str, name: str, request_id: str) -> None:
    """GetBatchJob, the first page of ListBatchJobs and the database row hold exactly these strings."""
    batch = store.world.services.batch_stub
    got = await batch.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))
    store.world.tally.add("GetBatchJob", s.Answer(grpc.StatusCode.OK))
    assert (got.name, got.request_id) == (name, request_id)
    # Newest first: a job just made is on the first page (an idempotent repeat was checked when it was made).
    listed = await batch.ListBatchJobs(batch_pb2.ListBatchJobsRequest(page_size=3))
    store.world.tally.add("ListBatchJobs", s.Answer(grpc.StatusCode.OK))
    matches = [j for j in listed.batch_jobs if j.id == job_id]
    assert matches or request_id in store.jobs_by_request_id, "job missing from ListBatchJobs"
    for match in matches:
        assert (match.name, match.request_id) == (name, request_id)
    async with store.db.connection() as conn:
        row = await conn.fetchrow("SELECT name, request_id FROM batch_jobs WHERE id = $1", uuid.UUID(job_id))
    assert row is not None
    assert row["name"].encode() == name.encode()
    assert (row["request_id"] or "").encode() == request_id.encode()


def with_verbatim_examples(test: Any, argument: str) -> Any:
    """Adds every hand-picked case as an explicit example of the argument."""
    for value in VERBATIM_CASES:
        test = example(**{argument: value})(test)
    return test


@verbatim_settings(60)
@given(name=texts())
async def _job_names(store: Store, name: str) -> None:
    answer = await call(store, "CreateBatchJob", job_request(name=name, request_id=f"bad-input-{uuid.uuid4()}"))
    problem = text_problem(name)
    if problem is not None:
        assert_rejected(answer, {"name": problem})
        return
    assert answer.code == grpc.StatusCode.OK, f"{answer.code.name} {answer.message!r}"
    job = answer.response
    if name == "":
        assert job.name.startswith("batch "), job.name  # the documented default
        return
    assert job.name == name
    await assert_job_reads_back(store, job.id, name, job.request_id)


test_job_names_are_stored_verbatim_or_rejected = pytest.mark.slow(with_verbatim_examples(_job_names, "name"))
test_job_names_are_stored_verbatim_or_rejected.__doc__ = (
    "A job name comes back identical from every read, or is rejected naming `name` (over 200 characters, NUL)."
)


@verbatim_settings(60)
@given(request_id=texts())
async def _job_request_ids(store: Store, request_id: str) -> None:
    answer = await call(store, "CreateBatchJob", job_request(name="verbatim", request_id=request_id))
    problem = request_id_problem(request_id)
    if problem is not None:
        assert_rejected(answer, {"request_id": problem})
        return
    assert answer.code == grpc.StatusCode.OK, f"{answer.code.name} {answer.message!r}"
    job = answer.response
    if request_id:
        first = store.jobs_by_request_id.setdefault(request_id, job.id)
        assert job.id == first, "a repeated request_id made a second job"
    assert job.request_id == request_id
    await assert_job_reads_back(store, job.id, job.name, request_id)


test_job_request_ids_are_stored_verbatim_or_rejected = with_verbatim_examples(_job_request_ids, "request_id")
test_job_request_ids_are_stored_verbatim_or_rejected.__doc__ = (
    "A job request_id comes back identical (and a repeat returns the same job), or is rejected naming `request_id`."
)


# --- conversations ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@verbatim_settings(100)
@given(request_id=st.one_of(texts(), st.uuids().map(lambda u: f"conv-{u}")), created_by=created_by_values())
@example(request_id="'; DROP TABLE conversations; --", created_by="'; DROP TABLE conversations; --")
@example(request_id="$1", created_by="$1")
@example(request_id="😀" * LIMIT, created_by=str(uuid.UUID(int=2**128 - 1)).upper())
@example(request_id="nul\x00", created_by="00000000-0000-0000-0000-00000000000\x00")
@example(request_id="\u202eRTL", created_by="../../etc/passwd")
async def test_conversation_request_id_and_created_by_are_verbatim_or_rejected(
    store: Store, request_id: str, created_by: str
) -> None:
    """GenerateConversation: request_id comes back identical from every read; created_by comes back as the same
    UUID in canonical form; otherwise INVALID_ARGUMENT names each bad field."""
    request = conversation_request(request_id, created_by)
    answer = await call(store, "GenerateConversation", request)
    expected: dict[str, str] = {}
    problem = request_id_problem(request_id)
    if problem is not None:
        expected["request_id"] = problem
    if created_by and not CANONICAL.fullmatch(created_by):
        shown = created_by if len(created_by) <= 60 else created_by[:57] + "..."
        expected["created_by"] = (
            f"{shown!r} is not a UUID" if len(created_by) == 36 else f"{shown!r} is not a UUID (expected 36 characters"
        )
    if expected:
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, f"{answer.code.name} {answer.message[:300]!r}"
        got = {v.field: v.description for v in answer.violations()}
        assert set(got) == set(expected), got
        for name, description in expected.items():
            assert got[name].startswith(description), (got[name], description)
        return
    assert answer.code == grpc.StatusCode.OK, f"{answer.code.name} {answer.message!r}"
    stored = answer.response
    owner = str(uuid.UUID(created_by)) if created_by else s.NIL
    if request_id and request_id in store.conversations_by_request_id:
        # An idempotent repeat returns the first call's conversation, made for the first call's created_by.
        assert stored.pk == store.conversations_by_request_id[request_id], "a repeated request_id generated again"
        owner = stored.created_by
    elif request_id:
        store.conversations_by_request_id[request_id] = stored.pk
    if request_id:
        assert stored.request_id == request_id
    else:
        assert re.fullmatch(rf"anonymous/{s.UUID_TEXT.pattern}", stored.request_id), stored.request_id
    assert stored.created_by == owner
    generation = store.world.services.generation_stub
    got = await generation.GetConversation(generation_pb2.GetConversationRequest(pk=stored.pk))
    assert (got.request_id, got.created_by) == (stored.request_id, owner)
    listed = await generation.ListConversations(
        generation_pb2.ListConversationsRequest(created_by=owner, page_size=1000)
    )
    assert [c.request_id for c in listed.conversations if c.pk == stored.pk] == [stored.request_id]
    async with store.db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT request_id, created_by FROM conversations WHERE id = $1", uuid.UUID(stored.pk)
        )
    assert row is not None
    assert row["request_id"].encode() == stored.request_id.encode()
    assert str(row["created_by"]) == owner
    for rpc in ("GetConversation", "ListConversations"):
        store.world.tally.add(rpc, s.Answer(grpc.StatusCode.OK))


# --- a validation gap: UUID spellings that are neither canonical nor rejected ----------------------------------------


def _lenient_spellings() -> list[str]:
    base = "aa514346-cd61-42ac-adad-498934975402"
    return [s.UUID_MUTATIONS[name](base, 0) for name in s.LENIENT_UUID_MUTATIONS if name != "upper"]


@settings(
    phases=[Phase.explicit], deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(created_by=st.none())
@example(created_by="٠٠٠٠٠٠٠٠-٠٠٠٠-٠٠٠٠-٠٠٠٠-٠٠٠٠٠٠٠٠٠٠٠٠")
@example(created_by=_lenient_spellings()[0])
@example(created_by=_lenient_spellings()[1])
@example(created_by=_lenient_spellings()[2])
@example(created_by=_lenient_spellings()[3])
@example(created_by=_lenient_spellings()[4])
@example(created_by=_lenient_spellings()[5])
@example(created_by=_lenient_spellings()[6])
async def test_non_canonical_uuid_spellings_are_rejected(store: Store, created_by: str) -> None:
    """A created_by that is not a canonical UUID is rejected naming created_by (it was once stored normalised:
    '٠٠٠٠٠٠٠٠-٠٠٠٠-...' in Arabic-Indic digits as the nil UUID, 'urn:aa514346cd61...' as aa514346-cd61-...)."""
    answer = await call(store, "CreateBatchJob", job_request(name="lenient", request_id="", created_by=created_by))
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{created_by!r} was accepted and stored as {answer.response.created_by if answer.response else '?'}"
    )
