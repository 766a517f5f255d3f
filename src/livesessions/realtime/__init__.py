"""Realtime: peers connected over WebSockets and the messages between them."""
