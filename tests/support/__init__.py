"""Helpers shared by the tests (real servers, certificates, waiting)."""
