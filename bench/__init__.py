"""convgen's benchmark suite (issue 6): the real services as processes, real PostgreSQL, a fake Messages API.

Run everything with ``python -m bench.run_all [--quick]`` (or ``python3 dev.py bench [--quick]``); one benchmark
with ``python -m bench.<name> [--quick]``. Each benchmark prints one JSON line; run_all writes docs/performance.md.
"""
