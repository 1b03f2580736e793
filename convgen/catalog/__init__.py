"""The catalog (personas, emotional arcs, training topics, prompt templates): types, SQL and the loader."""
