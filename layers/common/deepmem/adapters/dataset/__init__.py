"""ChunkSource over a DeepLake dataset (`deeplake.py`), and the dataset read as a search corpus
(`corpus.py`: search and evaluation with or without a query adapter).
"""
