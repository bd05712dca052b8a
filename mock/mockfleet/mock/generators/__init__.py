"""Payload generators: specs (validation) live in ``specs``; runtime in ``build``."""
