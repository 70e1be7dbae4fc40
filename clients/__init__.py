"""Typed Python clients for the three vaner services.

They return plain dataclasses (never protos), retry UNAVAILABLE with exponential backoff, put a
deadline on every call, and speak TLS + bearer token when the server asks for them::

    from clients import TaggerClient
    with TaggerClient("127.0.0.1:50053") as tagger:
        docs = tagger.extract(["BRCA1 mutations cause breast cancer."])
"""

from clients.base import ClientOptions, RetryPolicy, ServiceError
from clients.kb import KnowledgeBaseClient
from clients.retrieval import RetrievalClient
from clients.tagger import TaggerClient
from clients.types import (
    Concept,
    DbrSet,
    DocumentEntities,
    Entity,
    Health,
    ModelVersion,
    Progress,
    RetrainResult,
    Snapshot,
)

__all__ = [
    "ClientOptions", "Concept", "DbrSet", "DocumentEntities", "Entity", "Health", "KnowledgeBaseClient",
    "ModelVersion", "Progress", "RetrainResult", "RetrievalClient", "RetryPolicy", "ServiceError", "Snapshot",
    "TaggerClient",
]
