"""The peer a user would write instead of convgen: asyncio.gather over AsyncAnthropic.messages.create, a semaphore.

No persistence, no retries of its own (the SDK's defaults), no parsing beyond collecting the text. Run as
``python -m bench.naive_peer --base-url URL --items N --concurrency C``; prints one JSON object with its timing.
The clock starts at the first request (the interpreter's start-up and imports are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import anthropic

from convgen.catalog.templates import load_builtin_templates
from generation_service.conversation_format import SYSTEM_PROMPT

MODEL = "claude-sonnet-5-5"


def _prompts(items: int) -> list[str]:
    """User prompts of the same size as convgen's: its template texts, with the item number appended."""
    templates = [t.template_text for t in load_builtin_templates()] or ["Write a financial-planning conversation."]
    return [f"{templates[i % len(templates)]}\n\nConversation number {i}." for i in range(items)]


async def run(base_url: str, items: int, concurrency: int) -> dict[str, Any]:
    """Sends `items` requests, at most `concurrency` at once; returns counts and the elapsed time."""
    client = anthropic.AsyncAnthropic(api_key="bench-key", base_url=base_url)
    semaphore = asyncio.Semaphore(concurrency)
    prompts = _prompts(items)

    async def one(prompt: str) -> str:
        async with semaphore:
            message = await client.messages.create(
                model=MODEL,
                max_tokens=8192,
                system=SYSTEM_PROMPT,
                messages=[{"role": "user", "content": prompt}],
            )
            return "".join(block.text for block in message.content if block.type == "text")

    cpu_start = time.process_time()
    start = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    await client.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "items": items,
        "ok": items - len(errors),
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else None,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round((items - len(errors)) / elapsed, 2) if elapsed > 0 else None,
        "cpu_ms_per_item": round(cpu * 1000 / items, 3),
    }


async def run_prompts(
    base_url: str, prompts: list[tuple[str, str]], concurrency: int, *, model: str = MODEL
) -> dict[str, Any]:
    """The same script over given (system, user) prompts, counting the tokens the API reports by kind.

    As a user would write it: no cache_control, no effort (the API's default, high), no structured output.
    """
    client = anthropic.AsyncAnthropic(api_key="bench-key", base_url=base_url)
    semaphore = asyncio.Semaphore(concurrency)
    totals = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    async def one(system: str, user: str) -> None:
        async with semaphore:
            message = await client.messages.create(
                model=model, max_tokens=8192, system=system, messages=[{"role": "user", "content": user}]
            )
        for kind in totals:
            totals[kind] += getattr(message.usage, kind) or 0

    start = time.perf_counter()
    results = await asyncio.gather(*(one(system, user) for system, user in prompts), return_exceptions=True)
    elapsed = time.perf_counter() - start
    await client.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    return {
        "items": len(prompts),
        "ok": len(prompts) - len(errors),
        "errors": len(errors),
        "first_error": repr(errors[0]) if errors else None,
        "elapsed_s": round(elapsed, 3),
        "usage": totals,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.naive_peer")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.base_url, args.items, args.concurrency))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
