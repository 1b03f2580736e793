"""Dataset exports: fine-tuning files and a quality report from the conversations of batch jobs."""
