"""Core revision scripts."""
