"""EDRS integration service: connectors to the outside world and the credentials they carry."""
