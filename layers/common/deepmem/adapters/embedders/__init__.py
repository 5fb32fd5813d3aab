"""Embedder adapters: an OpenAI-compatible embeddings endpoint (`openai.py`), or the offline int8
ONNX MiniLM shipped in a wheel (`offline.py`).
"""
