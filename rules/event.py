"""Compatibility path: the event model moved to `falconet.model.event`, shared by every stage."""

from falconet.model.event import NO_LOGINUID, Container, Event, Fd, Group, Process, User

__all__ = ["NO_LOGINUID", "Container", "Event", "Fd", "Group", "Process", "User"]
