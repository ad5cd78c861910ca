"""Sensors that wait (deferred) for storage and published results."""
