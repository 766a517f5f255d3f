"""Webhook delivery: which URLs may be called, how API keys are kept, how a
delivery is signed and sent, and the dispatcher that sends what is queued."""
