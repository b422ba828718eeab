"""Helpers of the container tests: podman settings and image building."""
