"""The web page where a person connects a wallet and manages API keys."""
