"""Triggers the triggerer runs while a task is deferred."""
