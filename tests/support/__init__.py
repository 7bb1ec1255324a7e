"""Helpers shared by the tests (and the benches): never shipped in the wheel."""
