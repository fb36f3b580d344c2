"""Durable storage: control file and WAL segment store, each with an in-memory twin."""
