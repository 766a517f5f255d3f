"""Authentication: project API keys and the peer tokens peers join rooms with."""
