"""toolgate: rules/packs."""
