"""Jobs the end-to-end tests run in a subprocess (`python -m tests.scripts.NAME ...`): DDP, kill and resume."""
