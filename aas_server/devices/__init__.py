"""Simulated field devices the hub talks to like real ones: never imported by a connector."""
