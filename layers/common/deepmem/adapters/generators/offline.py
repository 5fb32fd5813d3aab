"""An offline QuestionGenerator: real questions formed from a chunk's own words, no network.

For the embedded default and tests. It asks about the chunk's title and its most salient
sentences (a sentence weighs the chunk-frequency of its content words), the mix that worked
for training a query adapter on generated questions (measured on this kind of machine).
Templates follow the sentence's shape: a definition ("X is ...") gives "What is X?", a
sentence with a known verb ("X returns ...") gives "What does X return?", an imperative
docstring line ("Return the ...") gives "What does <title> return?", anything else a question
about its key phrase, in one of several forms ("What is X?", "How is X described?", "What
role does X play?", ...) chosen per phrase by a seeded hash, so a corpus's questions do not all
read alike.
Text without sentence punctuation (lower-case, no full stops) is cut into clauses and windows
of words (`english.pieces`), so it yields as many questions as punctuated text.
Every question asks about a span of the chunk: its subject occurs in the chunk's words, in
order (`english.normalised`); a candidate whose span is not there (a metadata title the text
does not repeat) is never asked.
Deterministic: the same chunk and seed always give the same questions.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter

from deepmem.adapters.generators.english import (
    DEFINITION,
    DETERMINERS,
    IMPERATIVES,
    MAX_PHRASE_WORDS,
    NOT_NOUNS,
    PREPOSITIONS,
    TOKEN,
    VERBS,
    base_form,
    be_for,
    clean,
    cut_phrase,
    good_subject,
    is_code_name,
    is_content,
    is_plural,
    looks_like_code,
    lower_first,
    normalised,
    pieces,
    starts_with_pronoun,
    topic_of,
    words_of,
)
from deepmem.domain.chunks import Chunk
from deepmem.domain.questions import is_usable
from deepmem.domain.text import split_sentences
from deepmem.ports import UNPACED, GeneratedQuestions, Pacer

MIN_CONTENT_WORDS = 6  # below this a chunk has nothing worth asking about
MIN_SENTENCE_WORDS = 4
MAX_SENTENCE_WORDS = 40  # a longer piece is cut at clauses and then into windows
WINDOW_WORDS = 20
#: The forms a key phrase is asked in; `{be}` agrees with the phrase.
PHRASE_FORMS: tuple[str, ...] = (
    "What {be} {p}",
    "What should I know about {p}",
    "How is {p} described",
    "What role does {p} play",
    "What does the text say about {p}",
    "What is known about {p}",
)
#: The forms two key phrases of one sentence are asked in together: more specific than one.
PAIR_FORMS: tuple[str, ...] = (
    "How {be} {p} related to {q}",
    "What is known about {p} and {q}",
    "What does {p} have to do with {q}",
)

# A candidate question (None when its template gave nothing usable), what it asks about (for
# dedupe) and the span of the chunk it asks of (which must be in the chunk).
type _Candidate = tuple[str | None, str, str]


def _question(text: str) -> str | None:
    text = " ".join(text.split()).strip()
    if not text:
        return None
    text = text.rstrip(" ?.!:;,") + "?"
    text = text[0].upper() + text[1:]
    return text if is_usable(text) else None


class OfflineQuestionGenerator:
    """Implements the QuestionGenerator port with no network and no model.

    Each chunk counts as one "offline call" (`llm_calls=1`, `tokens_used=0`) so a run's
    counters read the same way as with an LLM.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def generate(
        self, chunk: Chunk, count: int, pacer: Pacer = UNPACED
    ) -> GeneratedQuestions:
        return GeneratedQuestions(
            chunk_id=chunk.id, questions=self.questions(chunk, count), llm_calls=1
        )

    def questions(self, chunk: Chunk, count: int) -> list[str]:
        """Up to `count` distinct questions about the chunk, best first; fewer (or none) when
        the chunk is too short to ask that many."""
        if count <= 0:
            return []
        words = [w.lower() for w in words_of(chunk.text) if is_content(w)]
        if len(words) < MIN_CONTENT_WORDS:
            return []
        weights = Counter(words)
        title = self._title(chunk)
        sentences = self._salient_sentences(chunk.text, title, weights, self._heading(chunk))
        text = normalised(chunk.text)

        result: list[str] = []
        seen: set[str] = set()
        subjects: set[str] = set()

        def add(question: str | None, subject: str, span: str) -> None:
            if question is None or len(result) >= count:
                return
            if any(normalised(part) not in text for part in span.split("\n")):
                return  # its answer is not in the chunk: never ask it
            key = re.sub(r"[^a-z0-9 ]", "", question.lower())
            topic = topic_of(subject)
            if key in seen or topic in subjects:
                return
            seen.add(key)
            subjects.add(topic)
            result.append(question)

        if title:
            add(self._title_question(title), title, title)
        # First one question per sentence, so questions spread over the chunk; then the
        # other candidates, when a chunk has fewer good sentences than questions asked.
        candidates = [
            self._candidates(sentence, title, weights, chunk.id) for sentence in sentences
        ]
        for options in candidates:
            for question, subject, span in options:
                before = len(result)
                add(question, subject, span)
                if len(result) > before:
                    break
        for options in candidates:
            for question, subject, span in options:
                add(question, subject, span)
        return result

    @staticmethod
    def _title(chunk: Chunk) -> str | None:
        title = chunk.metadata.get("title")
        if isinstance(title, str) and title.strip():
            return cut_phrase(clean(title), max_words=8) or None
        first = chunk.text.lstrip().splitlines()[0] if chunk.text.strip() else ""
        if first.lstrip().startswith("#"):
            return cut_phrase(clean(first), max_words=8) or None
        return None

    @staticmethod
    def _heading(chunk: Chunk) -> str:
        """The chunk's whole title, uncut, as `normalised` words ("" without one)."""
        title = chunk.metadata.get("title")
        if isinstance(title, str) and title.strip():
            return normalised(clean(title))
        return ""

    @staticmethod
    def _title_question(title: str) -> str | None:
        if is_code_name(title):
            return _question(f"What does {title} do")  # a code name: json.dumps, HTTPServer
        if len(title.split()) <= 4:
            return _question(f"What is {lower_first(title)}")
        return _question(f"What should I know about {lower_first(title)}")

    @staticmethod
    def _salient_sentences(
        text: str, title: str | None, weights: Counter[str], heading: str = ""
    ) -> list[str]:
        scored: list[tuple[float, int, str]] = []
        parts = [
            piece
            for raw in split_sentences(text)
            if not raw.lstrip().startswith("#")  # a heading is the title, asked about already
            for piece in pieces(clean(raw), MAX_SENTENCE_WORDS, WINDOW_WORDS)
        ]
        for position, sentence in enumerate(parts):
            size = len(sentence.split())
            if not MIN_SENTENCE_WORDS <= size <= MAX_SENTENCE_WORDS:
                continue
            if (title and sentence.rstrip(".") == title) or looks_like_code(sentence):
                continue
            if heading and normalised(sentence) in heading:
                continue  # the title restated (Cranfield opens with it): asked about already
            content = {w.lower() for w in words_of(sentence) if is_content(w)}
            if len(content) < 2:
                continue
            score = sum(weights[w] for w in content) / math.sqrt(len(content) + 1)
            # The opening sentence usually states what the chunk is about.
            if position <= 1:
                score *= 1.5
            scored.append((score, position, sentence))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [sentence for _, _, sentence in scored]

    def _candidates(
        self, sentence: str, title: str | None, weights: Counter[str], chunk_id: str
    ) -> list[_Candidate]:
        """Questions this sentence can give, best retrieval cue first, with the subject of
        each: two key phrases asked together carry more of the sentence's words than a
        definition's subject ("What are analytic solutions?"), so they come first."""
        body = sentence.rstrip(".!?")
        phrases = self._phrase_questions(sentence, body, title, weights, chunk_id)
        pairs = [c for c in phrases if "\n" in c[2]]  # a pair's span is its two phrases
        return [
            *pairs,
            *self._definition_questions(body, title),
            *self._verb_questions(body, title),
            *self._imperative_questions(body, title),
            *(c for c in phrases if "\n" not in c[2]),
        ]

    @staticmethod
    def _definition_questions(body: str, title: str | None) -> list[_Candidate]:
        """ "X is ..." asks "What is X?"; "It is ..." asks it of the title."""
        definition = DEFINITION.match(body)
        if not definition:
            return []
        subject = cut_phrase(definition.group("subject"))
        verb = definition.group("verb")
        if good_subject(subject):
            return [(_question(f"What {verb} {lower_first(subject)}"), subject, subject)]
        if title and starts_with_pronoun(subject):
            return [(_question(f"What {verb} {lower_first(title)}"), title, title)]
        return []

    @staticmethod
    def _verb_questions(body: str, title: str | None) -> list[_Candidate]:
        """ "X returns ..." asks "What does X return?": the first known verb among the
        sentence's first words, when an object follows it."""
        words = body.split()
        for index, word in enumerate(words[1:6], start=1):
            if word.lower() not in VERBS:
                continue
            following = words[index + 1].lower() if index + 1 < len(words) else ""
            if not following or following in PREPOSITIONS:
                return []  # "the border runs across ..." has no object to ask about
            subject = cut_phrase(" ".join(words[:index]))
            verb = base_form(word.lower())
            if good_subject(subject):
                return [(_question(f"What does {lower_first(subject)} {verb}"), subject, subject)]
            if title and starts_with_pronoun(subject):
                return [(_question(f"What does {title} {verb}"), f"{title} {verb}", title)]
            return []
        return []

    @staticmethod
    def _imperative_questions(body: str, title: str | None) -> list[_Candidate]:
        """An imperative docstring line ("Return the ...") asks what a code name does, and
        how to do the action."""
        first, _, rest = body.partition(" ")
        if first.lower() not in IMPERATIVES or not rest:
            return []
        candidates: list[_Candidate] = []
        action = cut_phrase(f"{first.lower()} {rest}", max_words=MAX_PHRASE_WORDS + 2)
        if title and is_code_name(title):
            asked = _question(f"What does {title} {first.lower()}")
            candidates.append((asked, f"{title} {first}", title))
        if len(action.split()) >= 3:
            candidates.append((_question(f"How do I {action}"), action, action))
        return candidates

    def _phrase_questions(
        self, sentence: str, body: str, title: str | None, weights: Counter[str], chunk_id: str
    ) -> list[_Candidate]:
        """Questions about the sentence's key phrases, whatever its shape."""
        candidates: list[_Candidate] = []
        phrases = self._key_phrases(sentence, weights)
        one, two = (topic_of(p) for p in phrases[:2]) if len(phrases) >= 2 else ("", "")
        if one and two and one not in two and two not in one:
            first, second = (lower_first(p) if body.startswith(p) else p for p in phrases[:2])
            digest = hashlib.sha256(f"{self.seed}:{chunk_id}:{first}:{second}".encode()).digest()
            form = PAIR_FORMS[digest[0] % len(PAIR_FORMS)]
            asked = _question(form.format(be=be_for(phrases[0]), p=first, q=second))
            candidates.append((asked, f"{phrases[0]} / {phrases[1]}", "\n".join(phrases[:2])))
        for phrase in phrases:
            # Only a sentence-initial capital is lowered: "Prandtl number" stays as written.
            asked = lower_first(phrase) if body.startswith(phrase) else phrase
            if title and is_code_name(title) and title.lower() not in phrase.lower():
                about = _question(f"What does the {title} documentation say about {asked}")
                candidates.append((about, phrase, phrase))
            for form in self._forms(phrase, chunk_id):
                question = _question(form.format(be=be_for(phrase), p=asked))
                candidates.append((question, phrase, phrase))
        return candidates

    def _forms(self, phrase: str, chunk_id: str) -> list[str]:
        """Two of `PHRASE_FORMS` for this phrase in this chunk, in an order and a choice made
        by a seeded hash: the plain "What is X?" and one other, so the same phrase in two
        chunks is seldom asked in the same words."""
        key = f"{self.seed}:{chunk_id}:{phrase.lower()}"
        digest = hashlib.sha256(key.encode()).digest()
        other = PHRASE_FORMS[1 + digest[0] % (len(PHRASE_FORMS) - 1)]
        if digest[1] % 2:
            return [other, PHRASE_FORMS[0]]
        return [PHRASE_FORMS[0], other]

    @staticmethod
    def _key_phrases(sentence: str, weights: Counter[str], limit: int = 3) -> list[str]:
        """The heaviest noun-like runs of consecutive content words (at most 6 words, the
        best piece of each run), heaviest first; a run right after a determiner ("the",
        "of") is more likely a noun phrase."""
        ranked: list[tuple[float, int, str]] = []
        run: list[str] = []
        after_determiner = False
        previous = previous_run_word = ""
        tokens = [*TOKEN.findall(sentence), ""]
        for position, word in enumerate(tokens):
            # After a plural noun a lower-case word is most likely the verb ("files hold").
            verb_after_plural = bool(run) and is_plural(run[-1]) and word.islower()
            if (
                word
                and is_content(word)
                and word.lower() not in NOT_NOUNS
                and not verb_after_plural
            ):
                if not run and word.lower() in IMPERATIVES:
                    previous = word
                    continue  # "parse AIFF files" is an action, not a thing
                if not run:
                    after_determiner = previous.lower() in DETERMINERS
                    previous_run_word = previous
                run.append(word)
                previous = word
                continue
            previous = word
            best: tuple[float, int, str] | None = None
            for start in range(len(run)):
                for stop in range(start + 1, min(len(run), start + 6) + 1):
                    piece = run[start:stop]
                    if piece[-1].lower().endswith("ly"):
                        continue  # an adverb does not end a noun phrase
                    score = sum(weights[w.lower()] for w in piece) + 0.5 * len(piece)
                    if start == 0 and after_determiner:
                        score += 1.0
                    text = " ".join(piece)
                    if start == 0 and previous_run_word.lower() == "the":
                        text = f"the {text}"  # "What is the Prandtl number?"
                    if best is None or score > best[0]:
                        best = (score, position, text)
            if best is not None and _good_phrase(best[2], weights):
                ranked.append(best)
            run = []
        ranked.sort(key=lambda item: (-item[0], item[1]))
        return [phrase for _, _, phrase in ranked[:limit]]


def _good_phrase(phrase: str, weights: Counter[str]) -> bool:
    words = topic_of(phrase).split()
    if max(len(w) for w in words) < 4:
        return False
    # One word said once ("true") is no topic.
    return len(words) > 1 or weights[words[0].lower()] >= 2
