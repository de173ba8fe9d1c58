"""Targets put releases on hosts and run them; they do I/O only and never decide."""
