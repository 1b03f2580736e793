"""Model clients: the port, the Anthropic adapter and the offline generator."""
