"""Baton's SIP signalling layer: sans-IO messages, transactions and dialogs, and a thin
asyncio transport. See the module docstrings for each layer's rules."""
