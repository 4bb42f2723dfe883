"""Collectors: parts that read the system on an interval and publish snapshots."""
