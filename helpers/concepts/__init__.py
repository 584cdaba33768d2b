"""Notebooks 01-03 explained as data and arithmetic: design patterns, InternVL's architecture, memory, engines."""
