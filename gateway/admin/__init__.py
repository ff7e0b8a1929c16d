"""Administration of teams, keys and spend: the operations behind the admin API and CLI."""
