"""Test support: real servers (PostgreSQL, moto S3, a Messages API) and process helpers, shared with bench/."""
