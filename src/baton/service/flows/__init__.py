"""The flows feature."""
