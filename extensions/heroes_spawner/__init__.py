"""HEROES gateway package."""
