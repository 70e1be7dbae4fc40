"""Phrase mining, KB retrieval and Dense Bioentities Recognition (DBR) assembly (VANER 3.4).

The one home of the DBR logic: the CLI (``vaner dbr``, ``vaner retrain``, ``vaner train --dbr``)
and the retrieval gRPC servicer all call into these modules. Nothing here imports grpc except
``retrieval.remote`` (through ``clients/``).
"""

from retrieval.dbr import DbrBuilder, DbrParams, DbrSet, assemble
from retrieval.linking import link_spans, snapshot_linker
from retrieval.phrases import MinedPhrase, MinerConfig, PhraseMiner
from retrieval.retrieve import Retriever, retrieve_phrases

__all__ = [
    "DbrBuilder", "DbrParams", "DbrSet", "MinedPhrase", "MinerConfig", "PhraseMiner", "Retriever",
    "assemble", "link_spans", "retrieve_phrases", "snapshot_linker",
]
