"""The package version, in one place (imported by the CLI, provenance and the public API)."""

__version__ = "0.1.0"
