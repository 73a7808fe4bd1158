"""toolgate's command line and development helpers (demo service, dev OIDC issuer)."""
