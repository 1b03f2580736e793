"""PostgreSQL access shared by both services: the pool wrapper, migrations and the embedded server."""
