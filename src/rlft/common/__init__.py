"""Utilities every layer above uses: atomic writes and the run folder, content hashes, the optimiser."""
