"""Egress: the built-in recorder and livestream, and the jobs behind them."""
