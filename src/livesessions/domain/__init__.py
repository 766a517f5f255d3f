"""The domain: rooms, live sessions, peers and their permissions."""
