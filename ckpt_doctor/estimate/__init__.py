"""Closed-form memory estimation (no torch imports)."""
