"""The HTTP JSON API over one index (``mmretrieve serve``).

Modules: wire (the JSON forms of hits, shared with :mod:`mmretrieve.client`), queries (a JSON
search request -> Retriever.search arguments), config (ServeConfig), app (the ASGI application),
limits (request-size guard), run (uvicorn start-up).
Importing this package does not import FastAPI; ``create_app`` and ``serve`` do.
"""
from .config import ServeConfig
from .wire import hit_from_dict, hit_to_dict

__all__ = ["ServeConfig", "hit_to_dict", "hit_from_dict"]
