"""The business modules. Each is isolated: its own database, its own messages."""
