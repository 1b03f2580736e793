"""Reliability suite: real services as processes under crashes, restarts and faults; one set of invariants."""
