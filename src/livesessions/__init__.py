"""livesessions: a self-hosted, wire-compatible Huddle01 Live Sessions API."""

__version__ = "0.1.0"
