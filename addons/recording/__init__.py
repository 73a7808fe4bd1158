"""Recording: the addon that hands every call to the session store (`toolgate.sessions`)."""
