"""UniCTR: multi-domain CTR prediction with a language-model backbone (Uni-CTR)."""

__version__ = "0.1.0"
