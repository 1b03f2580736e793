"""What commands print: rich tables for people, one JSON object (or JSON lines for streams) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clients.errors import ConvgenRpcError
from convgen.v1 import batch_pb2, common_pb2

# Without a terminal rich would wrap at 80 columns and cut UUIDs; logs and pipes get wide lines instead.
PIPE_WIDTH = 220


def to_dict(message: Message) -> dict[str, Any]:
    """A message as a JSON-ready dict: proto field names, defaults included, int64 as numbers."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """A short lower-case enum name: TIER_EDGE_CASE -> edge_case."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()


def tier_name(value: int) -> str:
    """template, scenario or edge_case."""
    return enum_name(common_pb2.Tier, value, "TIER_")


def job_state_name(value: int) -> str:
    """queued, running, paused, completed, failed, cancelled or stopping."""
    return enum_name(batch_pb2.BatchJobState, value, "BATCH_JOB_STATE_")


def item_state_name(value: int) -> str:
    """queued, processing, completed, failed or cancelled."""
    return enum_name(batch_pb2.BatchItemState, value, "BATCH_ITEM_STATE_")


def when(ts: Timestamp, present: bool = True) -> str:
    """A timestamp as 'YYYY-MM-DD HH:MM:SS UTC', or '-' when unset."""
    if not present or (ts.seconds == 0 and ts.nanos == 0):
        return "-"
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")


def usage_text(usage: common_pb2.TokenUsage) -> str:
    """Token usage in one line, cache writes by TTL."""
    text = f"{usage.input_tokens} in / {usage.output_tokens} out"
    if usage.cache_read_input_tokens or usage.cache_creation_input_tokens:
        written = f"{usage.cache_creation_5m_input_tokens} written (5m)"
        if usage.cache_creation_1h_input_tokens:
            written += f" + {usage.cache_creation_1h_input_tokens} (1h)"
        text += f" (cache: {usage.cache_read_input_tokens} read, {written})"
    return text


def cost_text(cost: common_pb2.CostBreakdown) -> str:
    """A cost split by kind of token in one line."""
    writes = cost.cache_write_5m_usd + cost.cache_write_1h_usd
    return (
        f"input ${cost.input_usd:.4f}, output ${cost.output_usd:.4f}, cache write ${writes:.4f}, "
        f"cache read ${cost.cache_read_usd:.4f}"
    )


class Output:
    """Prints results as rich tables or JSON, and errors to stderr."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode
        terminal = sys.stdout.isatty()
        self.console = Console(highlight=False, width=None if terminal else PIPE_WIDTH, soft_wrap=not terminal)

    @property
    def is_terminal(self) -> bool:
        """True when stdout is a terminal (live displays animate)."""
        return self.console.is_terminal

    def json(self, data: Mapping[str, Any] | Message) -> None:
        """One JSON object on one line."""
        value = to_dict(data) if isinstance(data, Message) else dict(data)
        print(json.dumps(value, ensure_ascii=False, default=str), flush=True)

    def text(self, line: str, *, style: str | None = None) -> None:
        """A line of plain text (no markup interpretation)."""
        self.console.print(escape(line), style=style, soft_wrap=True)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        wide: Sequence[str] = (),
    ) -> None:
        """A table; columns named in wide (ids, keys) are never cut. Too wide for the screen: one line per row."""
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in columns:
            if column in wide:
                table.add_column(column, no_wrap=True)
            else:
                table.add_column(column, overflow="fold", min_width=min(len(column), 10))
        materialised = [[str(cell) for cell in row] for row in rows]
        for row in materialised:
            table.add_row(*(escape(cell) for cell in row))
        needed = 1 + sum(
            3 + (max(len(column), *(len(row[i]) for row in materialised)) if column in wide else min(len(column), 10))
            for i, column in enumerate(columns)
        )
        if needed <= self.console.width:
            self.console.print(table)
            return
        if title:
            self.text(title, style="italic")
        for row in materialised:
            self.text("  ".join(f"{column}: {cell}" for column, cell in zip(columns, row, strict=True) if cell))

    def fields(self, pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column key/value table."""
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in pairs:
            table.add_row(escape(key), escape(str(value)))
        self.console.print(table)


def print_error(error: ConvgenRpcError) -> None:
    """error: CODE: message, then one line per field violation, on stderr."""
    print(f"error: {error}", file=sys.stderr)
    for violation in error.field_violations:
        print(f"  - {violation.field}: {violation.description}", file=sys.stderr)
    if error.retry_delay is not None:
        print(f"  (retry after {error.retry_delay:.1f}s)", file=sys.stderr)
    sys.stderr.flush()
