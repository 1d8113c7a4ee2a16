"""Who is calling: principals, roles and permissions, tokens, passwords and API keys."""
