"""Positions and presence: agent states of the dispatcher positions, phone registrations."""
