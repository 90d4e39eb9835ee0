"""The upgrade and backup/restore scenario (`make test-upgrade`): its own testbed lifecycle."""
