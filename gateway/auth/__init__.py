"""Who is calling: gateway keys and the principal (team and key) a request acts for."""
