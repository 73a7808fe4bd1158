"""Vaulted credentials: the addon that injects them, the credentials file, and echo masking."""
