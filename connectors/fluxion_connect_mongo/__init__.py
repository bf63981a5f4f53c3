"""MongoDB connectors for fluxion-flows, on PyMongo's async API (``AsyncMongoClient``).

Motor, the older asyncio driver, reached end of life on 2026-05-14; PyMongo's
async API is its official successor, so this package uses it. Registered
through entry points exactly like a third-party plugin:

- ``fluxion_flows.sources``: ``mongodb = "fluxion_connect_mongo:MongoSourceProvider"``
- ``fluxion_flows.sinks``: ``mongodb = "fluxion_connect_mongo:MongoSinkProvider"``

Importing this package imports ``pymongo``; without the ``mongodb`` extra the
registry turns that ImportError into "pip install 'fluxion-flows[mongodb]'".
"""

from fluxion_connect_mongo.errors import DocumentWriteError, PartialWriteError, ResumeTokenLostError
from fluxion_connect_mongo.sink import MongoSink, MongoSinkProvider
from fluxion_connect_mongo.source import MongoChangeStreamSource, MongoSourceProvider

__all__ = [
    "DocumentWriteError",
    "MongoChangeStreamSource",
    "MongoSink",
    "MongoSinkProvider",
    "MongoSourceProvider",
    "PartialWriteError",
    "ResumeTokenLostError",
]
