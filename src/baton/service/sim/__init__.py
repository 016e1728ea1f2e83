"""The sim feature."""
