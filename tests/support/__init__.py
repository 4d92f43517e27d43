"""Test support: reference implementations (oracles), data generators and small parsers that
more than one test module uses. Nothing here is imported by a runtime path."""
