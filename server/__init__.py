"""Scrapoxy server: master (HTTP proxy), manager (instance pool) and commander (API + GUI)."""
__version__ = "0.1.0"
