"""logsvc: live per-client logging and a durable append-only journal on Twisted."""

__version__ = "0.1.0"
