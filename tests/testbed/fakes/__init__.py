"""Fake NVIDIA tools copied into each GPU host's bin dir (stdlib-only scripts)."""
