"""Backends answer requests in batches. Registered by model-spec prefix in harness.tasks."""
