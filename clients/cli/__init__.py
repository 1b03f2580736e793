"""The convgen command line."""
