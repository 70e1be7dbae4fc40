"""The tagger: instruction-conditioned bidirectional LLaMA sequence labeller (VANER 3.2-3.5)."""
