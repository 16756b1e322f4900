"""Pipeline glue: params schema and validation, artifact paths, experiment tables."""
