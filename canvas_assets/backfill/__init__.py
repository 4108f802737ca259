"""Backfills: read a whole semester (or the term list) from Canvas, validate it, write it."""
