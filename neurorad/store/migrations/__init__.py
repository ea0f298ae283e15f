"""Alembic migrations of the neurorad store (shipped in the package; see db.migrate)."""
