"""An offline QuestionGenerator: real questions formed from a chunk's own words, no network.

For the embedded default and tests. It asks about the chunk's title and its most salient
sentences (a sentence weighs the chunk-frequency of its content words), the mix that worked
for training a query adapter on generated questions (measured on this kind of machine).
Templates follow the sentence's shape: a definition ("X is ...") gives "What is X?", a
sentence with a known verb ("X returns ...") gives "What does X return?", an imperative
docstring line ("Return the ...") gives "What does <title> return?", anything else a question
about its key phrase.
Deterministic: the same chunk always gives the same questions.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from deepmem.domain.chunks import Chunk
from deepmem.domain.questions import is_usable
from deepmem.domain.text import split_sentences
from deepmem.ports import GeneratedQuestions

MIN_CONTENT_WORDS = 6  # below this a chunk has nothing worth asking about
MIN_SENTENCE_WORDS = 4
MAX_SENTENCE_WORDS = 80
MAX_PHRASE_WORDS = 6


def _vocabulary(words: str) -> frozenset[str]:
    return frozenset(words.split())


STOPWORDS = _vocabulary(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each either
    etc few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just may me might more most must my myself no nor not now of
    off on once only or other our ours ourselves out over own same shall she should so some
    such than that the their theirs them themselves then there these they this those through
    thus to too under until up upon us very via was we were what when where which while who
    whom why will with within without would yet you your yours yourself e.g i.e eg ie one two
    used use using given see default note following"""
)
_PRONOUNS = _vocabulary("it this that these those they he she we you there here which what")
# Third-person verbs that make "What does X <verb>?" a natural question.
_VERBS = _vocabulary(
    """returns provides creates supports allows uses contains defines implements handles reads
    writes converts raises represents describes computes generates stores takes accepts
    builds parses formats encodes decodes sends receives checks validates produces manages
    controls performs runs calls loads saves opens closes wraps extends exposes measures
    reports requires offers enables prevents removes adds sets gets finds determines
    specifies maps"""
)
# Verbs, modals and auxiliaries that end a noun phrase ("the boundary layer depends ...").
_NOT_NOUNS = _VERBS | _vocabulary(
    """is are was were be been will can may must should would could shall has have had do
    does did depends occurs runs lies works follows means becomes remains appears seems
    happens starts ends begins exists applies refers belongs consists results"""
)
_PREPOSITIONS = _vocabulary(
    """across along around at by for from in into of off on onto over through to toward
    towards under with within without about after before between per"""
)
# A subject that starts like this points outside the sentence or is not a noun phrase.
_BAD_SUBJECT_START = (
    _PRONOUNS
    | _PREPOSITIONS
    | _vocabulary(
        """only all each every some any both if when while also however although because
        since so but and or as such other another most many much"""
    )
)
_SUBJECT_GLUE = _vocabulary("the a an of for and in on to with")
_DETERMINERS = _vocabulary("the a an of for to each every its their your this")
_IMPERATIVES = _vocabulary(
    """return create convert parse build compute generate read write open close load save
    send receive check validate produce remove add set get find make construct initialize
    format encode decode split join copy move delete register run call apply test compare
    translate wrap raise provide"""
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.'\u2013-]*[A-Za-z0-9]|[A-Za-z]")
# Words and single punctuation marks: a key phrase never runs across punctuation.
_TOKEN = re.compile(_WORD.pattern + r"|[^\sA-Za-z]")
# "X is/are ...", X at most six plain words: anything longer is rarely the subject.
_DEFINITION = re.compile(
    r"^(?P<subject>[\w\u2013-]+(?: [\w\u2013-]+){0,5}) (?P<verb>is|are) (?P<rest>\S.*)$"
)
_CODE_CHARS = re.compile(r"[{}\[\]<>=|\\$@]|>>>|\w\(")
_MARKUP = re.compile(r"[`*#>]+|(?<!\w)_+|_+(?!\w)")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _content(word: str) -> bool:
    lowered = word.lower().strip(".'-")
    return (
        len(lowered) >= 3
        and lowered not in STOPWORDS
        and not lowered.isdigit()
        and not lowered.endswith("n't")
    )


def _clean(text: str) -> str:
    text = _MARKUP.sub(" ", text)
    text = re.sub(r"^\s*[-+]\s+", "", text)
    return " ".join(text.split())


def _looks_like_code(sentence: str) -> bool:
    letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
    return bool(_CODE_CHARS.search(sentence)) or letters < 0.85 * len(sentence)


def _phrase(text: str, max_words: int = MAX_PHRASE_WORDS) -> str:
    """`text` cut at its first clause boundary and to `max_words`, trailing stopwords off."""
    text = re.split(r"[,;:()]| - | -- ", text, maxsplit=1)[0]
    words = text.split()[:max_words]
    while words and (words[-1].lower().strip(".") in STOPWORDS):
        words.pop()
    return " ".join(words).strip(" .'\"")


def _lower_first(text: str) -> str:
    """Lower a sentence-initial capital ("The parser" -> "the parser"), not an acronym or a
    name written in code style ("JSON", "HTTPServer")."""
    head, _, tail = text.partition(" ")
    second = tail.split()[0] if tail else ""
    capitalised = len(head) > 1 and head[0].isupper() and head[1:].islower()
    if capitalised and (head.lower() in STOPWORDS or (second and second[0].islower())):
        return head.lower() + (" " + tail if tail else "")
    return text


def _base_form(verb: str) -> str:
    if verb.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    return verb[:-1] if verb.endswith("s") else verb


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

    async def generate(self, chunk: Chunk, count: int) -> GeneratedQuestions:
        return GeneratedQuestions(
            chunk_id=chunk.id, questions=self.questions(chunk, count), llm_calls=1
        )

    def questions(self, chunk: Chunk, count: int) -> list[str]:
        """Up to `count` distinct questions about the chunk, best first; fewer (or none) when
        the chunk is too short to ask that many."""
        if count <= 0:
            return []
        words = [w.lower() for w in _words(chunk.text) if _content(w)]
        if len(words) < MIN_CONTENT_WORDS:
            return []
        weights = Counter(words)
        title = self._title(chunk)
        sentences = self._salient_sentences(chunk.text, title, weights)

        result: list[str] = []
        seen: set[str] = set()
        subjects: set[str] = set()

        def add(question: str | None, subject: str) -> None:
            if question is None or len(result) >= count:
                return
            key = re.sub(r"[^a-z0-9 ]", "", question.lower())
            topic = _topic(subject)
            if key in seen or topic in subjects:
                return
            seen.add(key)
            subjects.add(topic)
            result.append(question)

        if title:
            add(self._title_question(title), title)
        # First one question per sentence, so questions spread over the chunk; then the
        # other candidates, when a chunk has fewer good sentences than questions asked.
        candidates = [self._candidates(sentence, title, weights) for sentence in sentences]
        for options in candidates:
            for question, subject in options:
                before = len(result)
                add(question, subject)
                if len(result) > before:
                    break
        for options in candidates:
            for question, subject in options:
                add(question, subject)
        return result

    @staticmethod
    def _title(chunk: Chunk) -> str | None:
        title = chunk.metadata.get("title")
        if isinstance(title, str) and title.strip():
            return _phrase(_clean(title), max_words=8) or None
        first = chunk.text.lstrip().splitlines()[0] if chunk.text.strip() else ""
        if first.lstrip().startswith("#"):
            return _phrase(_clean(first), max_words=8) or None
        return None

    @staticmethod
    def _title_question(title: str) -> str | None:
        if _is_code_name(title):
            return _question(f"What does {title} do")  # a code name: json.dumps, HTTPServer
        if len(title.split()) <= 4:
            return _question(f"What is {_lower_first(title)}")
        return _question(f"What should I know about {_lower_first(title)}")

    @staticmethod
    def _salient_sentences(text: str, title: str | None, weights: Counter[str]) -> list[str]:
        scored: list[tuple[float, int, str]] = []
        for position, raw in enumerate(split_sentences(text)):
            if raw.lstrip().startswith("#"):
                continue  # a heading is the title, asked about already
            sentence = _clean(raw)
            size = len(sentence.split())
            if not MIN_SENTENCE_WORDS <= size <= MAX_SENTENCE_WORDS:
                continue
            if (title and sentence.rstrip(".") == title) or _looks_like_code(sentence):
                continue
            content = {w.lower() for w in _words(sentence) if _content(w)}
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
        self, sentence: str, title: str | None, weights: Counter[str]
    ) -> list[tuple[str | None, str]]:
        """Questions this sentence can give, most natural first, with the subject of each."""
        candidates: list[tuple[str | None, str]] = []
        body = sentence.rstrip(".!?")
        first, _, rest = body.partition(" ")

        definition = _DEFINITION.match(body)
        if definition:
            subject = _phrase(definition.group("subject"))
            verb = definition.group("verb")
            if _good_subject(subject):
                candidates.append((_question(f"What {verb} {_lower_first(subject)}"), subject))
            elif title and subject.split()[:1] and subject.split()[0].lower() in _PRONOUNS:
                candidates.append((_question(f"What {verb} {_lower_first(title)}"), title))

        words = body.split()
        for index, word in enumerate(words[1:6], start=1):
            if word.lower() not in _VERBS:
                continue
            following = words[index + 1].lower() if index + 1 < len(words) else ""
            if not following or following in _PREPOSITIONS:
                break  # "the border runs across ..." has no object to ask about
            subject = _phrase(" ".join(words[:index]))
            verb = _base_form(word.lower())
            if _good_subject(subject):
                candidates.append((_question(f"What does {_lower_first(subject)} {verb}"), subject))
            elif title and subject.split()[:1] and subject.split()[0].lower() in _PRONOUNS:
                candidates.append((_question(f"What does {title} {verb}"), f"{title} {verb}"))
            break

        if first.lower() in _IMPERATIVES and rest:
            action = _phrase(f"{first.lower()} {rest}", max_words=MAX_PHRASE_WORDS + 2)
            if title and _is_code_name(title):
                candidates.append(
                    (_question(f"What does {title} {first.lower()}"), f"{title} {first}")
                )
            if len(action.split()) >= 3:
                candidates.append((_question(f"How do I {action}"), action))

        for phrase in self._key_phrases(sentence, weights):
            # Only a sentence-initial capital is lowered: "Prandtl number" stays as written.
            asked = _lower_first(phrase) if body.startswith(phrase) else phrase
            if title and _is_code_name(title) and title.lower() not in phrase.lower():
                candidates.append(
                    (_question(f"What does the {title} documentation say about {asked}"), phrase)
                )
            candidates.append((_question(f"What {_be(phrase)} {asked}"), phrase))
            candidates.append((_question(f"What should I know about {asked}"), phrase))
        return candidates

    @staticmethod
    def _key_phrases(sentence: str, weights: Counter[str], limit: int = 3) -> list[str]:
        """The heaviest noun-like runs of consecutive content words (at most 4 words, the
        best piece of each run), heaviest first; a run right after a determiner ("the",
        "of") is more likely a noun phrase."""
        ranked: list[tuple[float, int, str]] = []
        run: list[str] = []
        after_determiner = False
        previous = previous_run_word = ""
        tokens = [*_TOKEN.findall(sentence), ""]
        for position, word in enumerate(tokens):
            # After a plural noun a lower-case word is most likely the verb ("files hold").
            verb_after_plural = bool(run) and _plural(run[-1]) and word.islower()
            if word and _content(word) and word.lower() not in _NOT_NOUNS and not verb_after_plural:
                if not run and word.lower() in _IMPERATIVES:
                    previous = word
                    continue  # "parse AIFF files" is an action, not a thing
                if not run:
                    after_determiner = previous.lower() in _DETERMINERS
                    previous_run_word = previous
                run.append(word)
                previous = word
                continue
            previous = word
            best: tuple[float, int, str] | None = None
            for start in range(len(run)):
                for stop in range(start + 1, min(len(run), start + 4) + 1):
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
    words = _topic(phrase).split()
    if max(len(w) for w in words) < 4:
        return False
    # One word said once ("true") is no topic.
    return len(words) > 1 or weights[words[0].lower()] >= 2


def _plural(word: str) -> bool:
    return (
        len(word) > 3
        and word.islower()
        and word.endswith("s")
        and not word.endswith(("ss", "us", "is", "'s"))
    )


def _be(phrase: str) -> str:
    """ "are" for a plural-looking phrase ("ArgumentParser objects"), else "is"."""
    return "are" if _plural(phrase.rsplit(maxsplit=1)[-1]) else "is"


def _topic(subject: str) -> str:
    """What a question is about, for dedupe: "The boundary layer" = "boundary layer"."""
    words = subject.lower().split()
    while words and words[0] in ("the", "a", "an"):
        words.pop(0)
    return " ".join(words)


def _good_subject(subject: str) -> bool:
    words = subject.split()
    if not words or len(words) > MAX_PHRASE_WORDS:
        return False
    if words[0].lower() in _BAD_SUBJECT_START or words[0].lower() in _IMPERATIVES:
        return False  # "Return True if ..." is an instruction, not a subject
    if any(w.lower() in _PRONOUNS or w.lower() in _NOT_NOUNS for w in words[1:]):
        return False  # "the value of this exception": "this" points outside the sentence
    if any(w.lower() in STOPWORDS and w.lower() not in _SUBJECT_GLUE for w in words[1:]):
        return False  # "the platform if ...": a clause, not a noun phrase
    return any(_content(w) for w in words)


def _is_code_name(title: str) -> bool:
    """json.dumps, HTTPServer, read_config: a name from code, not a prose title."""
    return " " not in title and bool(re.search(r"[._]|[a-z][A-Z]", title))
