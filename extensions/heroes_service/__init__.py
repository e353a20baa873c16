"""HEROES gateway service (hub-managed FastAPI app)."""

__version__ = "0.1.0"
