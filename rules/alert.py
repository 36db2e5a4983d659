"""Compatibility path: the alert model moved to `falconet.model.alert`, shared by every stage."""

from falconet.model.alert import Alert, Cursor, OutputValue, Priority, format_time, parse_time

__all__ = ["Alert", "Cursor", "OutputValue", "Priority", "format_time", "parse_time"]
