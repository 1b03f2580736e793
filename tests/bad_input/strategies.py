"""Hypothesis strategies for malformed, hostile and valid convgen requests, and the checks every answer must pass.

Requests are built before the services exist, so ids of things made at run time (jobs in each state, their items,
a stored conversation, real page tokens) appear as placeholders such as ``@job:paused`` that ``resolve`` swaps for
the real value just before a request is sent. A page token ``@forge:{json}`` is forged at send time: a token that
the server's own encoder would produce for that request's filters, carrying the hostile keyset position in the JSON
(page tokens are not signed, so any caller can build one).
"""

from __future__ import annotations

import base64
import json
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import strategies as st

from convgen.catalog.templates import load_builtin_templates, template_uuid
from convgen.paging import encode_token
from convgen.v1 import batch_pb2, catalog_pb2, common_pb2, generation_pb2
from tests.support.demo_catalog import catalog_file

T = TypeVar("T")

# --- known ids -------------------------------------------------------------------------------------------------------

_CATALOG = catalog_file()
PERSONA_IDS: list[str] = [p["id"] for p in _CATALOG["personas"]]
ARC_IDS: list[str] = [a["id"] for a in _CATALOG["emotional_arcs"]]
TEMPLATE_ARC_IDS: list[str] = [a["id"] for a in _CATALOG["emotional_arcs"] if a["tier"] == "template"]
TOPIC_IDS: list[str] = [t["id"] for t in _CATALOG["training_topics"]]
TEMPLATE_IDS: list[str] = [str(template_uuid(d.template_name)) for d in load_builtin_templates()]
NIL = str(uuid.UUID(int=0))
# Human keys by id: a message may name a catalog entry by its key (e.g. "no active prompt template for arc ...").
KEY_BY_ID: dict[str, str] = {
    **{p["id"]: p["persona_key"] for p in _CATALOG["personas"]},
    **{a["id"]: a["arc_key"] for a in _CATALOG["emotional_arcs"]},
    **{t["id"]: t["topic_key"] for t in _CATALOG["training_topics"]},
    **{str(template_uuid(d.template_name)): d.template_name for d in load_builtin_templates()},
}
SEED_PERSONA = _CATALOG["seed_failing_job"]["persona_ids"][0]
SEED_ARC = _CATALOG["seed_failing_job"]["emotional_arc_ids"][0]
SEED_TOPIC = _CATALOG["seed_failing_job"]["training_topic_ids"][0]
CRISIS_ARC = next(a["id"] for a in _CATALOG["emotional_arcs"] if a["arc_key"] == "crisis_to_referral")

# --- placeholders resolved at send time ----------------------------------------------------------------------------

JOB_STATES = ("queued", "running", "paused", "stopping", "completed", "failed", "cancelled")
ITEM_STATES = ("queued", "processing", "completed", "failed", "cancelled")
JOB_PLACEHOLDERS = [f"@job:{s}" for s in JOB_STATES]
ITEM_PLACEHOLDERS = [f"@item:{s}" for s in ITEM_STATES]
CONVERSATION_PLACEHOLDERS = ["@conversation:pk", "@conversation:business_key"]
TOKEN_KINDS = ("personas", "arcs", "topics", "templates", "conversations", "jobs", "items")
FORGE_PREFIX = "@forge:"

# --- hostile text --------------------------------------------------------------------------------------------------

TRAVERSALS = [
    "../../etc/passwd",
    "../../../../../../etc/passwd",
    "..",
    ".",
    "/",
    "/etc/passwd",
    "..\\..\\windows\\win.ini",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "....//....//etc/passwd",
    "../" * 12 + "tmp/x",
    "raw/../../x",
    "batch-logs/../conversation-files/x",
    "./00000000-0000-0000-0000-000000000000",
    "00000000-0000-0000-0000-00000000/../",
    "0000000../0000-0000-0000-000000000000",
    "~/.ssh/id_rsa",
    "file:///etc/passwd",
    "s3://batch-logs/../x",
]
SQL_AND_FORMAT = [
    "'; DROP TABLE batch_jobs; --",
    "' OR '1'='1",
    '"; DROP TABLE conversations; --',
    "$1",
    "$$",
    "%s",
    "%(x)s",
    "{0}",
    "{}",
    "\\",
    "\\x00",
    "\\'",
    "E'\\\\'",
    "--",
    "/*",
    "null",
    "NULL",
    "None",
    "true",
    "[]",
    '{"a": 1}',
]
ODD_TEXT = [
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\x00",
    "a\x00b",
    NIL + "\x00",
    "\x00" + NIL[1:],
    "\x7f",
    "\ufeff",
    "\u200b",
    "\u202e" + "evil",
    "שלום עולם",
    "مرحبا بالعالم",
    "😀",
    "👩\u200d👩\u200d👧\u200d👦",
    "Ω≈ç√∫",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\U0010fffd",
    "é" * 36,
    "😀" * 36,
]
NASTY_STRINGS = TRAVERSALS + SQL_AND_FORMAT + ODD_TEXT


def huge_strings(sizes: Iterable[int] = (37, 201, 2049, 65_537, 1_000_000)) -> st.SearchStrategy[str]:
    """Long strings of one repeated unit, up to about 1 MB (cheap to draw: the size is sampled, not generated)."""
    units = ["a", "0", "-", "é", "😀", "\x00", "../", "'", "\u202e", "f" * 8 + "-"]
    return st.builds(lambda unit, size: (unit * size)[:size], st.sampled_from(units), st.sampled_from(list(sizes)))


def _digits_as(table: str) -> Callable[[str], str]:
    return lambda s: s.translate(str.maketrans("0123456789", table))


# Spellings of a real UUID that are not its canonical 36-character form.
UUID_MUTATIONS: dict[str, Callable[[str, int], str]] = {
    "upper": lambda s, _i: s.upper(),
    "braces": lambda s, _i: "{" + s + "}",
    "urn_uuid": lambda s, _i: "urn:uuid:" + s,
    "urn_hex": lambda s, _i: "urn:" + s.replace("-", ""),
    "hex_only": lambda s, _i: s.replace("-", ""),
    "hyphens_first": lambda s, _i: "----" + s.replace("-", ""),
    "drop_char": lambda s, i: s[:i] + s[i + 1 :],
    "extra_char": lambda s, i: s[:i] + "a" + s[i:],
    "not_hex": lambda s, i: s[:i] + "g" + s[i + 1 :],
    "nul_inside": lambda s, i: s[:i] + "\x00" + s[i + 1 :],
    "slash_inside": lambda s, i: s[:i] + "/" + s[i + 1 :],
    "dot_inside": lambda s, i: s[:i] + "." + s[i + 1 :],
    "space_inside": lambda s, i: s[:i] + " " + s[i + 1 :],
    "leading_space": lambda s, _i: " " + s[1:],
    "trailing_newline": lambda s, _i: s + "\n",
    "underscore": lambda s, _i: s.replace("-", "_", 1),
    "plus_sign": lambda s, _i: "+" + s[1:],
    "arabic_indic_digits": lambda s, _i: _digits_as("٠١٢٣٤٥٦٧٨٩")(s),
    "fullwidth_digits": lambda s, _i: _digits_as("０１２３４５６７８９")(s),
    "cyrillic_a": lambda s, _i: s.replace("a", "а"),
    "doubled": lambda s, _i: s + s,
}
# Mutations that uuid.UUID still parses to the same UUID although the text is not canonical (see the report).
LENIENT_UUID_MUTATIONS = (
    "upper",
    "urn_hex",
    "hyphens_first",
    "leading_space",
    "underscore",
    "plus_sign",
    "arabic_indic_digits",
    "fullwidth_digits",
)


def near_uuids(base: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """A real (or known) UUID, mangled one of many ways."""
    source = base if base is not None else st.one_of(st.uuids().map(str), st.sampled_from(PERSONA_IDS + ARC_IDS))
    return st.builds(
        lambda s, name, i: UUID_MUTATIONS[name](s, i),
        source,
        st.sampled_from(sorted(UUID_MUTATIONS)),
        st.integers(0, 35),
    )


def garbage_text() -> st.SearchStrategy[str]:
    """Anything a client could put in a string field: all of Unicode (no surrogates: protobuf refuses them)."""
    return st.one_of(
        st.text(max_size=80),
        st.text(alphabet=string.hexdigits + "-", min_size=30, max_size=40),
        st.sampled_from(NASTY_STRINGS),
        st.binary(max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )


def uuid_fields(
    valid: Iterable[str] = (), *, placeholders: Iterable[str] = (), huge: bool = True
) -> st.SearchStrategy[str]:
    """Values for a UUID field: known ids and placeholders, random UUIDs, the nil UUID, near-UUIDs and garbage."""
    known = list(valid) + list(placeholders)
    options: list[st.SearchStrategy[str]] = [
        st.uuids().map(str),
        st.just(NIL),
        near_uuids(),
        garbage_text(),
    ]
    if known:
        options[:0] = [st.sampled_from(known)] * 3
    if huge:
        options.append(huge_strings())
    return st.one_of(options)


# --- numbers ---------------------------------------------------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def int32s() -> st.SearchStrategy[int]:
    """Any int32, biased towards the edges and the small values validation cares about."""
    lo, hi = INT32
    return st.one_of(
        st.integers(lo, hi),
        st.integers(-3, 1_100),
        st.sampled_from([lo, lo + 1, -1, 0, 1, 2, 20, 21, 50, 100, 256, 257, 999, 1000, 1001, 10_000, hi - 1, hi]),
    )


def page_sizes() -> st.SearchStrategy[int]:
    """page_size values: the default, the cap, just over it, negatives and int32 extremes."""
    return int32s()


def enum_numbers(known: Iterable[int]) -> st.SearchStrategy[int]:
    """Values for an open proto3 enum: known numbers and any other int32."""
    return st.one_of(st.sampled_from(sorted(set(known))), st.sampled_from(sorted(set(known))), int32s())


TIERS = [common_pb2.TIER_UNSPECIFIED, common_pb2.TIER_TEMPLATE, common_pb2.TIER_SCENARIO, common_pb2.TIER_EDGE_CASE]

# --- page tokens ---------------------------------------------------------------------------------------------------


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(*INT32),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    )


def _timestamps(*, extreme: bool) -> st.SearchStrategy[str]:
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    if extreme:
        # Valid ISO text whose instant PostgreSQL cannot hold once converted to UTC.
        return st.sampled_from(
            [
                "0001-01-01T00:00:00+14:00",
                "0001-01-01T05:00:00+10:00",
                "9999-12-31T23:59:59-14:00",
                "9999-12-31T20:00:00-05:00",
            ]
        )
    return st.one_of(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets).map(
            lambda d: d.isoformat()
        ),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(lambda d: d.isoformat()),
        st.sampled_from(["2020-01-01", "not a time", "", "2020-13-45T99:99:99"]),
    )


def hostile_positions() -> st.SearchStrategy[dict[str, Any]]:
    """Keyset positions a forged token may carry, including NUL and lone surrogates in a catalog key, instants
    PostgreSQL cannot hold and integers past int32 (each of which once reached the database as an error)."""
    keys = st.text(max_size=30).filter(lambda k: "\x00" not in k)
    times = _timestamps(extreme=False)
    positions = st.integers(*INT32)
    keys = st.one_of(st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfff"]), keys)
    times = st.one_of(_timestamps(extreme=True), times)
    positions = st.one_of(st.sampled_from([2**31, -(2**31) - 1, 2**40, 10**30]), positions)
    return st.one_of(
        st.fixed_dictionaries({"k": st.one_of(keys, _json_values())}),
        st.fixed_dictionaries({"t": st.one_of(times, _json_values()), "id": uuid_fields(huge=False)}),
        st.fixed_dictionaries({"p": st.one_of(positions, _json_values())}),
        st.dictionaries(st.sampled_from(["k", "t", "id", "p", "x"]), _json_values(), max_size=3),
    )


def _forged(positions: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str]:
    return positions.map(lambda p: FORGE_PREFIX + json.dumps(p))


def page_tokens(kind: str) -> st.SearchStrategy[str]:
    """page_token values: empty, a real one (any kind), garbage, tokens of other versions and forged positions."""
    raw_json = _json_values().map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("="))
    other_version = st.builds(
        lambda v, p: base64.urlsafe_b64encode(json.dumps({"v": v, "f": "0" * 16, "p": p}).encode()).decode(),
        st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()),
        _json_values(),
    )
    return st.one_of(
        st.just(""),
        st.sampled_from([f"@token:{k}" for k in TOKEN_KINDS]),
        st.just(f"@token:{kind}"),
        garbage_text(),
        raw_json,
        other_version,
        _forged(hostile_positions()),
        _forged(hostile_positions()),
        huge_strings((2048, 2049, 65_537)),
    )


def forge_token(request: Message, position: dict[str, Any]) -> str:
    """The token the server would issue for this request's filters, carrying position (mirrors the servicers)."""
    return encode_token(position, _filters_of(request))


def _canonical_or(value: str, default: str) -> str:
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else default
    except ValueError:
        return default


def _filters_of(request: Message) -> dict[str, Any]:
    kinds = {
        catalog_pb2.ListPersonasRequest: "personas",
        catalog_pb2.ListEmotionalArcsRequest: "arcs",
        catalog_pb2.ListTrainingTopicsRequest: "topics",
        catalog_pb2.ListTemplatesRequest: "templates",
    }
    if type(request) in kinds:
        return {"kind": kinds[type(request)]}
    if isinstance(request, batch_pb2.ListBatchJobsRequest):
        states = dict(enumerate(["", *JOB_STATES]))
        return {"state": states.get(request.state, "")}
    if isinstance(request, batch_pb2.ListBatchItemsRequest):
        states = dict(enumerate(["", *ITEM_STATES]))
        return {"job": _canonical_or(request.job_id, ""), "state": states.get(request.state, "")}
    if isinstance(request, generation_pb2.ListConversationsRequest):
        # Exact for unfiltered requests (what the strategy forges for); others get a token of other filters.
        return dict.fromkeys(("persona_id", "emotional_arc_id", "training_topic_id", "tier", "created_by"), "None")
    raise TypeError(f"no page token for {type(request).__name__}")


# --- requests per RPC ----------------------------------------------------------------------------------------------


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """None (the field left unset) or a value."""
    return st.one_of(st.none(), strategy)


def generation_parameters(*, valid: bool | None = None) -> st.SearchStrategy[common_pb2.GenerationParameters]:
    """GenerationParameters: valid ones (a real persona, template-tier arc and topic) or anything."""
    good = st.builds(
        common_pb2.GenerationParameters,
        persona_id=st.sampled_from(PERSONA_IDS),
        emotional_arc_id=st.sampled_from(TEMPLATE_ARC_IDS),
        training_topic_id=st.sampled_from(TOPIC_IDS),
        tier=st.just(common_pb2.TIER_TEMPLATE),
        template_id=st.sampled_from(["", NIL]),
    )
    wild = st.builds(
        common_pb2.GenerationParameters,
        persona_id=uuid_fields(PERSONA_IDS, huge=False),
        emotional_arc_id=uuid_fields(ARC_IDS, huge=False),
        training_topic_id=uuid_fields(TOPIC_IDS, huge=False),
        tier=enum_numbers(TIERS),
        template_id=st.one_of(st.just(""), st.just(NIL), uuid_fields(TEMPLATE_IDS, huge=False)),
    )
    if valid is True:
        return good
    if valid is False:
        return wild
    return st.one_of(good, wild)


def request_ids() -> st.SearchStrategy[str]:
    """Idempotency keys: empty, unique printable ones, hostile text, and too long ones."""
    return st.one_of(
        st.just(""),
        st.uuids().map(lambda u: f"bad-input-{u}"),
        garbage_text(),
        huge_strings((200, 201, 65_537, 1_000_000)),
    )


def names() -> st.SearchStrategy[str]:
    """Job names: empty, ordinary, hostile, at and over the 200-character limit, up to 1 MB."""
    return st.one_of(
        st.just(""), st.text(max_size=40), garbage_text(), huge_strings((199, 200, 201, 65_537, 1_000_000))
    )


def generate_conversation_requests() -> st.SearchStrategy[generation_pb2.GenerateConversationRequest]:
    """GenerateConversation: about a third valid (they generate and store a conversation), the rest anything."""
    valid = st.builds(
        generation_pb2.GenerateConversationRequest,
        parameters=generation_parameters(valid=True),
        request_id=st.one_of(st.just(""), st.uuids().map(lambda u: f"bad-input-{u}"), st.sampled_from(SQL_AND_FORMAT)),
        created_by=st.one_of(st.just(""), st.just(NIL), st.uuids().map(str)),
    )
    wild = st.builds(
        generation_pb2.GenerateConversationRequest,
        parameters=optional(generation_parameters()),
        request_id=request_ids(),
        created_by=st.one_of(st.just(""), st.just(NIL), uuid_fields()),
    )
    return st.one_of(valid, wild, wild)


def get_conversation_requests() -> st.SearchStrategy[generation_pb2.GetConversationRequest]:
    """GetConversation by pk, by business key, or by neither, with any view number."""
    keys = uuid_fields(placeholders=CONVERSATION_PLACEHOLDERS)
    views = enum_numbers([0, 1, 2])
    return st.one_of(
        st.builds(generation_pb2.GetConversationRequest, pk=keys, view=views),
        st.builds(generation_pb2.GetConversationRequest, business_key=keys, view=views),
        st.builds(generation_pb2.GetConversationRequest, view=views),
    )


def list_conversations_requests() -> st.SearchStrategy[Message]:
    """ListConversations, unfiltered (so forged tokens reach the keyset query) or with any filters."""
    filter_ids = st.one_of(st.just(""), st.just(""), uuid_fields(PERSONA_IDS + ARC_IDS + TOPIC_IDS, huge=False))
    return st.one_of(
        st.builds(
            generation_pb2.ListConversationsRequest,
            page_size=page_sizes(),
            page_token=page_tokens("conversations"),
            view=enum_numbers([0, 1, 2]),
        ),
        st.builds(
            generation_pb2.ListConversationsRequest,
            page_size=page_sizes(),
            page_token=page_tokens("conversations"),
            persona_id=filter_ids,
            emotional_arc_id=filter_ids,
            training_topic_id=filter_ids,
            tier=enum_numbers(TIERS),
            created_by=filter_ids,
            view=enum_numbers([0, 1, 2]),
        ),
    )


def catalog_list_requests(message: type[Message], kind: str) -> st.SearchStrategy[Any]:
    """A catalog List request with any page_size and page_token."""
    return st.builds(message, page_size=page_sizes(), page_token=page_tokens(kind))


def id_lists(valid: list[str], *, small: int = 4, large: int = 100) -> st.SearchStrategy[list[str]]:
    """Lists of ids: a few of anything, or many well-formed ones (many malformed: see the regression tests)."""
    return st.one_of(
        st.lists(uuid_fields(valid, huge=False), max_size=small),
        st.lists(st.sampled_from(valid), min_size=1, max_size=small, unique=True),
        st.lists(st.one_of(st.sampled_from(valid), st.uuids().map(str)), max_size=large),
    )


def combinations() -> st.SearchStrategy[batch_pb2.Combination]:
    """Combinations: small valid ones, empty lists, duplicates, malformed ids, unknown ids, and huge products."""
    return st.builds(
        batch_pb2.Combination,
        persona_ids=id_lists(PERSONA_IDS, small=2),
        emotional_arc_ids=id_lists(TEMPLATE_ARC_IDS, small=2),
        training_topic_ids=id_lists(TOPIC_IDS, small=3),
        tier=enum_numbers(TIERS),
        template_id=st.one_of(st.just(""), st.just(NIL), uuid_fields(TEMPLATE_IDS, huge=False)),
    )


def parameter_lists() -> st.SearchStrategy[batch_pb2.ParameterList]:
    """Parameter lists: empty, a few of anything, or many valid entries."""
    return st.one_of(
        st.builds(batch_pb2.ParameterList, items=st.lists(generation_parameters(), max_size=5)),
        st.builds(batch_pb2.ParameterList, items=st.lists(generation_parameters(valid=True), max_size=60)),
    )


def _job_request(selection: tuple[str, Message] | None = None, **fields: Any) -> batch_pb2.CreateBatchJobRequest:
    request = batch_pb2.CreateBatchJobRequest(**fields)
    if selection is not None:
        getattr(request, selection[0]).CopyFrom(selection[1])
        if not selection[1].ListFields():
            getattr(request, selection[0]).SetInParent()
    return request


def valid_combinations() -> st.SearchStrategy[batch_pb2.Combination]:
    """Small valid combinations (at most 2 x 2 x 2 items) of template-tier arcs."""
    return st.builds(
        batch_pb2.Combination,
        persona_ids=st.lists(st.sampled_from(PERSONA_IDS), min_size=1, max_size=2, unique=True),
        emotional_arc_ids=st.lists(st.sampled_from(TEMPLATE_ARC_IDS), min_size=1, max_size=2, unique=True),
        training_topic_ids=st.lists(st.sampled_from(TOPIC_IDS), min_size=1, max_size=2, unique=True),
        tier=st.just(common_pb2.TIER_TEMPLATE),
        template_id=st.sampled_from(["", NIL]),
    )


def budgets() -> st.SearchStrategy[float]:
    """Budgets in US dollars: ordinary, zero, negative, not a number, infinite and huge."""
    return st.one_of(
        st.floats(min_value=0, max_value=100),
        st.sampled_from([0.0, -0.01, float("nan"), float("inf"), -float("inf"), 1e9, 1e9 + 1, 1e300, 5e-7]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


# Field by field: a valid value, and anything.
_JOB_FIELDS_VALID: dict[str, st.SearchStrategy[Any]] = {
    "selection": st.one_of(
        st.tuples(st.just("combination"), valid_combinations()),
        st.tuples(
            st.just("parameter_list"),
            st.builds(
                batch_pb2.ParameterList, items=st.lists(generation_parameters(valid=True), min_size=1, max_size=4)
            ),
        ),
    ),
    "name": st.one_of(st.just(""), st.text(max_size=40).filter(lambda n: "\x00" not in n)),
    "request_id": st.one_of(st.just(""), st.uuids().map(lambda u: f"bad-input-{u}")),
    "concurrency": st.integers(0, 256),
    "max_attempts": st.integers(0, 20),
    "error_policy": st.sampled_from([0, 1, 2]),
    # Mostly not auto-started, so the fuzzing does not turn into a load test of the engine.
    "auto_start": st.sampled_from([None, False, False, False, False, False, True]),
    "created_by": st.one_of(st.just(""), st.uuids().map(str)),
}
_JOB_FIELDS_WILD: dict[str, st.SearchStrategy[Any]] = {
    "selection": st.one_of(
        st.none(),
        st.tuples(st.just("combination"), combinations()),
        st.tuples(st.just("combination"), combinations()),
        st.tuples(st.just("parameter_list"), parameter_lists()),
    ),
    "name": names(),
    "request_id": request_ids(),
    "concurrency": int32s(),
    "max_attempts": int32s(),
    "error_policy": enum_numbers([0, 1, 2]),
    "auto_start": st.sampled_from([None, False, False, False, True]),
    "created_by": st.one_of(st.just(""), uuid_fields(huge=False)),
    "validate_only": st.booleans(),
    "max_cost_usd": optional(budgets()),
}


def create_batch_job_requests() -> st.SearchStrategy[batch_pb2.CreateBatchJobRequest]:
    """CreateBatchJob: valid requests, valid ones with one field set to anything, and anything at all."""
    valid = st.fixed_dictionaries(_JOB_FIELDS_VALID)
    one_changed = st.sampled_from(sorted(_JOB_FIELDS_WILD)).flatmap(
        lambda name: st.fixed_dictionaries({**_JOB_FIELDS_VALID, name: _JOB_FIELDS_WILD[name]})
    )
    wild = st.fixed_dictionaries(_JOB_FIELDS_WILD)
    return st.one_of(valid, one_changed, one_changed, wild).map(lambda fields: _job_request(**fields))


def job_ids() -> st.SearchStrategy[str]:
    """job_id values: jobs in every state (placeholders), unknown UUIDs, near-UUIDs, garbage, huge strings."""
    return uuid_fields(placeholders=JOB_PLACEHOLDERS)


def list_batch_jobs_requests() -> st.SearchStrategy[batch_pb2.ListBatchJobsRequest]:
    """ListBatchJobs with any page_size, page_token and state filter number."""
    return st.builds(
        batch_pb2.ListBatchJobsRequest,
        page_size=page_sizes(),
        page_token=page_tokens("jobs"),
        state=enum_numbers(range(8)),
    )


def list_batch_items_requests() -> st.SearchStrategy[batch_pb2.ListBatchItemsRequest]:
    """ListBatchItems of any job, with any page_size, page_token and state filter number."""
    return st.builds(
        batch_pb2.ListBatchItemsRequest,
        job_id=job_ids(),
        page_size=page_sizes(),
        page_token=page_tokens("items"),
        state=enum_numbers(range(6)),
    )


def watch_requests() -> st.SearchStrategy[batch_pb2.WatchBatchJobRequest]:
    """WatchBatchJob of any job, with after_sequence unset, small, negative or huge."""
    sequences = st.one_of(
        st.integers(-3, 40), st.integers(*INT64), st.sampled_from([INT64[0], -1, 0, 1, 2**31, INT64[1]])
    )
    return st.builds(batch_pb2.WatchBatchJobRequest, job_id=job_ids(), after_sequence=optional(sequences))


def retry_requests() -> st.SearchStrategy[batch_pb2.RetryFailedItemsRequest]:
    """RetryFailedItems of any job with no, a few (any), or many (well-formed) item ids."""
    item_ids: st.SearchStrategy[list[str]] = st.one_of(
        st.just([]),
        st.lists(uuid_fields(placeholders=ITEM_PLACEHOLDERS, huge=False), max_size=4),
        st.lists(st.uuids().map(str), max_size=100),
    )
    return st.builds(batch_pb2.RetryFailedItemsRequest, job_id=job_ids(), item_ids=item_ids)


def update_requests() -> st.SearchStrategy[batch_pb2.UpdateBatchJobRequest]:
    """UpdateBatchJob of any job, with any values and any mask paths (known, unknown, none, repeated)."""
    jobs = st.builds(
        batch_pb2.BatchJob,
        id=job_ids(),
        name=names(),
        concurrency=int32s(),
        max_cost_usd=optional(budgets()),
        state=enum_numbers(range(8)),
    )
    paths = st.lists(
        st.one_of(
            st.sampled_from(["name", "concurrency", "max_cost_usd"]),
            st.sampled_from(["state", "id", "total_items", "estimate", "max_cost_usd.value", ""]),
            garbage_text(),
        ),
        max_size=4,
    )
    return st.builds(
        lambda job, mask: batch_pb2.UpdateBatchJobRequest(
            batch_job=job, update_mask=field_mask_pb2.FieldMask(paths=mask)
        ),
        jobs,
        paths,
    )


def estimate_requests() -> st.SearchStrategy[generation_pb2.EstimateConversationsRequest]:
    """EstimateConversations: a few valid parameter sets, or anything, at any concurrency."""
    return st.builds(
        generation_pb2.EstimateConversationsRequest,
        parameters=st.one_of(
            st.lists(generation_parameters(valid=True), min_size=1, max_size=4),
            st.lists(generation_parameters(), max_size=4),
        ),
        concurrency=int32s(),
    )


def job_id_requests(message: type[Message]) -> st.SearchStrategy[Any]:
    """A request whose only field is job_id."""
    return st.builds(message, job_id=job_ids())


# --- resolving placeholders ------------------------------------------------------------------------------------------


def resolve(request: Message, known: Mapping[str, str]) -> Message:
    """A copy of the request with placeholder strings replaced by real values and forged tokens encoded."""
    copy = type(request)()
    copy.CopyFrom(request)
    _resolve_in_place(copy, known)
    token = getattr(copy, "page_token", "")
    if isinstance(token, str) and token.startswith(FORGE_PREFIX):
        copy.page_token = forge_token(copy, json.loads(token[len(FORGE_PREFIX) :]))  # type: ignore[attr-defined]
    return copy


def _resolve_in_place(message: Message, known: Mapping[str, str]) -> None:
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            children = value if _is_repeated(descriptor) else [value]
            for child in children:
                _resolve_in_place(child, known)
        elif isinstance(value, str) and not _is_repeated(descriptor):
            if value in known:
                setattr(message, descriptor.name, known[value])
        elif _is_repeated(descriptor) and descriptor.type == descriptor.TYPE_STRING:
            replaced = [known.get(v, v) for v in value]
            del value[:]
            value.extend(replaced)


def _is_repeated(descriptor: Any) -> bool:
    return bool(descriptor.is_repeated)


# --- answers ---------------------------------------------------------------------------------------------------------

OK = grpc.StatusCode.OK
SPECIFIC_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# gRPC's own answer to a request over GRPC_MAX_MESSAGE_BYTES: it names the size, which is the offending value.
GRPC_SIZE_LIMIT = re.compile(r"Received message larger than max \(\d+ vs\. \d+\)")
# A fixed bug (test_regression_status_trailers_over_the_metadata_limit): a status whose message plus details
# exceeded the client's metadata limit (8 KiB soft, 16 KiB hard) reached the caller as this, not INVALID_ARGUMENT.
METADATA_LIMIT = re.compile(r"received metadata size exceeds (soft|hard) limit")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Answer:
    """What one call returned: the code, the message, the google.rpc.Status details, the response (when OK)."""

    code: grpc.StatusCode
    message: str = ""
    status: status_pb2.Status | None = None
    response: Any = None

    @classmethod
    def of_error(cls, error: grpc.aio.AioRpcError) -> Answer:
        """The answer carried by a failed call."""
        status = None
        for key, value in error.trailing_metadata() or ():
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
        return cls(error.code(), error.details() or "", status)

    def violations(self) -> list[error_details_pb2.BadRequest.FieldViolation]:
        """The BadRequest field violations in the details, if any."""
        found: list[error_details_pb2.BadRequest.FieldViolation] = []
        for detail in self.status.details if self.status is not None else ():
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                found.extend(bad.field_violations)
        return found

    @property
    def lost_to_metadata_limit(self) -> bool:
        """True when the real status was lost to gRPC's metadata size limit (the regression tests' bug)."""
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and bool(METADATA_LIMIT.search(self.message))


_FIELD_NAMES: dict[str, frozenset[str]] = {}


def field_names(message_type: Any) -> frozenset[str]:
    """Every field and oneof name in a message type and the message types under it."""
    cached = _FIELD_NAMES.get(message_type.DESCRIPTOR.full_name)
    if cached is not None:
        return cached
    names: set[str] = set()
    seen: set[str] = set()

    def walk(descriptor: Any) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        names.update(f.name for f in descriptor.fields)
        names.update(o.name for o in descriptor.oneofs)
        for f in descriptor.fields:
            if f.message_type is not None and not f.message_type.full_name.startswith("google.protobuf"):
                walk(f.message_type)

    walk(message_type.DESCRIPTOR)
    _FIELD_NAMES[message_type.DESCRIPTOR.full_name] = frozenset(names)
    return _FIELD_NAMES[message_type.DESCRIPTOR.full_name]


def string_values(message: Message) -> Iterator[str]:
    """Every string value in a message, nested and repeated ones included."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            for child in value if _is_repeated(descriptor) else [value]:
                yield from string_values(child)
        elif _is_repeated(descriptor) and descriptor.type == descriptor.TYPE_STRING:
            yield from value
        elif isinstance(value, str):
            yield value


def named_values(request: Message) -> set[str]:
    """Values a message may name: the request's UUIDs (canonical form) and the catalog keys they stand for."""
    values: set[str] = set()
    for text in string_values(request):
        try:
            canonical = str(uuid.UUID(text)) if len(text) == 36 else None
        except ValueError:
            canonical = None
        if canonical is not None:
            values.add(canonical)
            if canonical in KEY_BY_ID:
                values.add(KEY_BY_ID[canonical])
    return values


def _mentions_field(message: str, names: Iterable[str]) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


def problems_with(answer: Answer, request: Message, allowed: frozenset[grpc.StatusCode]) -> list[str]:
    """Why an answer breaks the contract (empty when it is fine). Known-bug answers are judged by the caller."""
    if answer.code == OK:
        return []
    problems: list[str] = []
    if answer.code not in allowed:
        problems.append(f"status {answer.code.name} is not one of {sorted(c.name for c in allowed)}")
    if not answer.message.strip():
        problems.append("empty status message")
        return problems
    if answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED and GRPC_SIZE_LIMIT.search(answer.message):
        return problems
    names = field_names(type(request))
    if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = answer.violations()
        if not violations:
            problems.append("INVALID_ARGUMENT without BadRequest field violations")
        for v in violations:
            root = re.split(r"[.\[]", v.field, maxsplit=1)[0]
            if root not in names:
                problems.append(f"violation names {v.field!r}, which is not a field of {type(request).__name__}")
        if violations and not any(v.field in answer.message for v in violations):
            problems.append("the message names none of the violating fields")
        return problems
    if not (_mentions_field(answer.message, names) or _mentions_value(answer.message, request)):
        problems.append("the message names neither a request field nor a value of the request")
    return problems


def _mentions_value(message: str, request: Message) -> bool:
    """True when the message names one of the request's UUIDs (canonical form) or the catalog key of one."""
    values = named_values(request)
    if set(UUID_TEXT.findall(message)) & values:
        return True
    return any(re.search(rf"\b{re.escape(key)}\b", message) for key in values & set(KEY_BY_ID.values()))


# --- tallies -------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Requests sent and answers received, by RPC and status code, for the report printed after the tests."""

    title: str
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, rpc: str, answer: Answer) -> None:
        """Counts one answer (size-limit answers under their own label)."""
        label = answer.code.name
        if answer.lost_to_metadata_limit:
            label = "RESOURCE_EXHAUSTED(metadata-limit bug)"
        elif answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED and GRPC_SIZE_LIMIT.search(answer.message):
            label = "RESOURCE_EXHAUSTED(message size)"
        self.codes[(rpc, label)] += 1

    @property
    def total(self) -> int:
        """Requests counted."""
        return sum(self.codes.values())

    def render(self) -> str:
        """A table: one line per RPC with its answers by code, then the totals by code."""
        by_code: Counter[str] = Counter()
        per_rpc: dict[str, Counter[str]] = {}
        for (rpc, code), n in self.codes.items():
            by_code[code] += n
            per_rpc.setdefault(rpc, Counter())[code] += n
        lines = [f"{self.title}: {self.total} requests"]
        for rpc in sorted(per_rpc):
            counts = ", ".join(f"{code} {n}" for code, n in sorted(per_rpc[rpc].items()))
            lines.append(f"  {rpc:<22} {sum(per_rpc[rpc].values()):>5}  {counts}")
        lines.append("  by code: " + ", ".join(f"{code} {n}" for code, n in by_code.most_common()))
        return "\n".join(lines)
