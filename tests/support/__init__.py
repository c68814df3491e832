"""Helpers shared by test modules (imported as ``support.<module>``; fixtures stay in conftest.py)."""
