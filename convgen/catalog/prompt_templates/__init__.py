"""The builtin prompt templates, one Markdown file each: a small header, a --- line, then the body."""
