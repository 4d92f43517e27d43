"""Test oracles and helpers shared by unit and integration tests."""
