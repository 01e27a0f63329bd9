"""Causal LMs: load from a folder or the hub, or build the tiny offline model."""
