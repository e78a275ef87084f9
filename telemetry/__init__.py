"""Telemetry: Prometheus metrics, OpenTelemetry traces and JSON logs."""
