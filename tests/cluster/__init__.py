"""The tests that run against a real control plane (dev/cluster)."""
