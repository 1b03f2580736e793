"""Ordered SQL migrations: NNNN_name.sql, applied by convgen.db.migrations."""
