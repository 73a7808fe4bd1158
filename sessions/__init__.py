"""toolgate: sessions."""
