"""Importers: other tools' files -> the one event table (perfreview.trace.schema)."""
