"""Alembic migrations for credgate's schema, shipped as package data.

Configured programmatically by ``gateway.storage.migrate``; there is no alembic.ini.
"""
