"""The message bus: messages and envelopes, transports, outbox, inbox and the group-committing
SQLite writer that every module's database uses."""
