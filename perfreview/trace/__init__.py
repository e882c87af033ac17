"""The event table (schema), runs on disk (Parquet + run.json) and the SQLite results store."""
