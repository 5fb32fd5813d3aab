"""QuestionGenerator adapters: any OpenAI-compatible endpoint (`openai.py`), or offline rules
(`offline.py`) for the embedded default and the tests.
"""
