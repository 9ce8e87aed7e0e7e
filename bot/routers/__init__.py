"""Routers, one module each, each built by ``build_router()``."""
