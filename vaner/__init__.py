"""vaner: biomedical named-entity recognition with an instruction-conditioned bidirectional LLaMA
tagger, a versioned UMLS knowledge base and Dense Bioentities Recognition (VANER)."""

__version__ = "0.1.0"
