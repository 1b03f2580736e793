"""The server-side commands: run the services, migrate the schema, load the catalog (`convgen` exposes them)."""
