"""Leaf layer: small helpers that import nothing from exosim, so any stage may import them."""
