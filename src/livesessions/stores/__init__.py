"""Stores: where state lives. Each kind sits behind the protocols in `base`."""
