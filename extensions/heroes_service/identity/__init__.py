"""Identity: Keycloak (users, organizations, groups, roles) and its mirror in JupyterHub's groups."""
