"""Phrase mining, KB retrieval and Dense Bioentities Recognition (DBR) assembly (VANER 3.4).

The one home of the DBR logic: the CLI (``vaner dbr``, ``vaner retrain``), the retrieval gRPC
servicer and the trainer's ``--dbr`` mixing all call into these modules. Nothing here imports grpc
except ``retrieval.remote``.
"""

from retrieval.dbr import DbrBuilder, DbrParams, DbrSet, assemble, build_dbr_sentences
from retrieval.linking import link_spans
from retrieval.phrases import MinedPhrase, MinerConfig, PhraseMiner
from retrieval.retrieve import Retriever, retrieve_phrases

__all__ = [
    "DbrBuilder", "DbrParams", "DbrSet", "MinedPhrase", "MinerConfig", "PhraseMiner", "Retriever",
    "assemble", "build_dbr_sentences", "link_spans", "retrieve_phrases",
]
