"""Bridges between the kernel and other agent frameworks and protocols, each behind its own extra."""
