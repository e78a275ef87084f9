"""The checkout saga: its definition, the orchestrator that runs it, and the tracker."""
