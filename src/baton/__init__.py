"""Baton: dispatch telephony flows as asyncio coroutines, one owner per user."""

__version__ = "0.1.0"
