"""The batch service: durable, concurrent batch jobs of conversation generations."""
