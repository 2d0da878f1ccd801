"""The home page: each role's overview after login."""
