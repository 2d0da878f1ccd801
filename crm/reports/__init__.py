"""Results: what the cluster achieved in a year or a chosen period."""
