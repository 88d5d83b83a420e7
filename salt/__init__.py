"""SAL-T pipeline: data, models, training and benchmarks for efficient jet-tagging transformers."""

__version__ = "0.1.0"
