"""Identity: the addon that verifies the caller's token, and OIDC verification with its key cache (pure, shared with the admin API and the CLI)."""
