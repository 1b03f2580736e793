"""SQL for the generation service's tables, one module per table."""
