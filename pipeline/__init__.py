"""Pipeline glue above the videogpt library: artifact paths (paths.py) and experiment tables (tables.py)."""
