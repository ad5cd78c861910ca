"""Helpers shared by the unit, fault-injection and end-to-end tests."""
