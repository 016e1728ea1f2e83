"""The users feature."""
