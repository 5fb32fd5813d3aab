"""QuestionGenerator adapters: any OpenAI-compatible endpoint (`openai.py`, reading its answers
with `completion.py`), or offline rules (`offline.py`, its word lists and phrase heuristics in
`english.py`) for the embedded default and the tests.
"""
