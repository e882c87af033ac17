"""Markdown output: every piece of markdown perfreview writes comes from templates/ through here."""
