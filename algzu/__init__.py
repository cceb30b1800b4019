"""algzu."""
