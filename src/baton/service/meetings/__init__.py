"""The meetings feature."""
