"""deepmem: synthetic question->chunk pairs from a DeepLake dataset, and training on them."""

__version__ = "0.1.0"
