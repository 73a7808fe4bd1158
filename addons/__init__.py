"""toolgate: addons."""
