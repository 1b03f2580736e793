"""Generated gRPC code for the convgen.v1 API (do not edit; run python3 dev.py gen)."""
