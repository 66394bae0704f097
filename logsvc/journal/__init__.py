"""The journal: its NDJSON listener and the observer that journals line events."""
