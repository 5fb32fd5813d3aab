"""The offline question generator's English: word lists, and the small heuristics that
find a phrase's words, cut it, tell a subject from a clause and a code name from a title.
Pure functions of strings, no state."""

from __future__ import annotations

import re

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
PRONOUNS = _vocabulary("it this that these those they he she we you there here which what")
# Third-person verbs that make "What does X <verb>?" a natural question.
VERBS = _vocabulary(
    """returns provides creates supports allows uses contains defines implements handles reads
    writes converts raises represents describes computes generates stores takes accepts
    builds parses formats encodes decodes sends receives checks validates produces manages
    controls performs runs calls loads saves opens closes wraps extends exposes measures
    reports requires offers enables prevents removes adds sets gets finds determines
    specifies maps"""
)
# Verbs, modals and auxiliaries that end a noun phrase ("the boundary layer depends ...").
NOT_NOUNS = VERBS | _vocabulary(
    """is are was were be been will can may must should would could shall has have had do
    does did depends occurs runs lies works follows means becomes remains appears seems
    happens starts ends begins exists applies refers belongs consists results"""
)
PREPOSITIONS = _vocabulary(
    """across along around at by for from in into of off on onto over through to toward
    towards under with within without about after before between per"""
)
# A subject that starts like this points outside the sentence or is not a noun phrase.
_BAD_SUBJECT_START = (
    PRONOUNS
    | PREPOSITIONS
    | _vocabulary(
        """only all each every some any both if when while also however although because
        since so but and or as such other another most many much"""
    )
)
_SUBJECT_GLUE = _vocabulary("the a an of for and in on to with")
DETERMINERS = _vocabulary("the a an of for to each every its their your this")
IMPERATIVES = _vocabulary(
    """return create convert parse build compute generate read write open close load save
    send receive check validate produce remove add set get find make construct initialize
    format encode decode split join copy move delete register run call apply test compare
    translate wrap raise provide"""
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.'\u2013-]*[A-Za-z0-9]|[A-Za-z]")
# Words and single punctuation marks: a key phrase never runs across punctuation.
TOKEN = re.compile(_WORD.pattern + r"|[^\sA-Za-z]")
# "X is/are ...", X at most six plain words: anything longer is rarely the subject.
DEFINITION = re.compile(
    r"^(?P<subject>[\w\u2013-]+(?: [\w\u2013-]+){0,5}) (?P<verb>is|are) (?P<rest>\S.*)$"
)
_CODE_CHARS = re.compile(r"[{}\[\]<>=|\\$@]|>>>|\w\(")
_MARKUP = re.compile(r"[`*#>]+|(?<!\w)_+|_+(?!\w)")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text)


def is_content(word: str) -> bool:
    lowered = word.lower().strip(".'-")
    return (
        len(lowered) >= 3
        and lowered not in STOPWORDS
        and not lowered.isdigit()
        and not lowered.endswith("n't")
    )


def clean(text: str) -> str:
    text = _MARKUP.sub(" ", text)
    text = re.sub(r"^\s*[-+]\s+", "", text)
    return " ".join(text.split())


def looks_like_code(sentence: str) -> bool:
    letters = sum(ch.isalpha() or ch.isspace() for ch in sentence)
    return bool(_CODE_CHARS.search(sentence)) or letters < 0.85 * len(sentence)


def cut_phrase(text: str, max_words: int = MAX_PHRASE_WORDS) -> str:
    """`text` cut at its first clause boundary and to `max_words`, trailing stopwords off."""
    text = re.split(r"[,;:()]| - | -- ", text, maxsplit=1)[0]
    words = text.split()[:max_words]
    while words and (words[-1].lower().strip(".") in STOPWORDS):
        words.pop()
    return " ".join(words).strip(" .'\"")


def lower_first(text: str) -> str:
    """Lower a sentence-initial capital ("The parser" -> "the parser"), not an acronym or a
    name written in code style ("JSON", "HTTPServer")."""
    head, _, tail = text.partition(" ")
    second = tail.split()[0] if tail else ""
    capitalised = len(head) > 1 and head[0].isupper() and head[1:].islower()
    if capitalised and (head.lower() in STOPWORDS or (second and second[0].islower())):
        return head.lower() + (" " + tail if tail else "")
    return text


def base_form(verb: str) -> str:
    if verb.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    return verb[:-1] if verb.endswith("s") else verb


def is_plural(word: str) -> bool:
    return (
        len(word) > 3
        and word.islower()
        and word.endswith("s")
        and not word.endswith(("ss", "us", "is", "'s"))
    )


def be_for(phrase: str) -> str:
    """ "are" for a plural-looking phrase ("ArgumentParser objects"), else "is"."""
    return "are" if is_plural(phrase.rsplit(maxsplit=1)[-1]) else "is"


def topic_of(subject: str) -> str:
    """What a question is about, for dedupe: "The boundary layer" = "boundary layer"."""
    words = subject.lower().split()
    while words and words[0] in ("the", "a", "an"):
        words.pop(0)
    return " ".join(words)


def starts_with_pronoun(subject: str) -> bool:
    """ "It is ...", "This returns ...": the subject points outside the sentence."""
    words = subject.split()
    return bool(words) and words[0].lower() in PRONOUNS


def good_subject(subject: str) -> bool:
    words = subject.split()
    if not words or len(words) > MAX_PHRASE_WORDS:
        return False
    if words[0].lower() in _BAD_SUBJECT_START or words[0].lower() in IMPERATIVES:
        return False  # "Return True if ..." is an instruction, not a subject
    if any(w.lower() in PRONOUNS or w.lower() in NOT_NOUNS for w in words[1:]):
        return False  # "the value of this exception": "this" points outside the sentence
    if any(w.lower() in STOPWORDS and w.lower() not in _SUBJECT_GLUE for w in words[1:]):
        return False  # "the platform if ...": a clause, not a noun phrase
    return any(is_content(w) for w in words)


def is_code_name(title: str) -> bool:
    """json.dumps, HTTPServer, read_config: a name from code, not a prose title."""
    return " " not in title and bool(re.search(r"[._]|[a-z][A-Z]", title))


#: Where a sentence ends whatever the next word's case ("flow . the layer"), or a clause.
_ANY_END = re.compile(r"(?<=[.!?;])\s+|\s+[.!?;]\s+")
_CLAUSE_BREAK = re.compile(r",\s+|\s+(?=(?:while|whereas|which|where|when|but|although)\s)")


def pieces(sentence: str, max_words: int, window: int) -> list[str]:
    """A sentence cut where it ends whatever the case of the next word; a piece still longer
    than `max_words` (text without sentence punctuation) cut at clause breaks and then into
    windows of `window` words, so a chunk with no full stop still has pieces to ask about."""
    out: list[str] = []
    for raw in _ANY_END.split(sentence):
        part = raw.strip()
        if len(part.split()) <= max_words:
            if part:
                out.append(part)
            continue
        for clause in _CLAUSE_BREAK.split(part):
            words = clause.split()
            out.extend(" ".join(words[i : i + window]) for i in range(0, len(words), window))
    return [p for p in out if p]


def normalised(text: str) -> str:
    """Lower-case words and digits only, single-spaced: for "is this phrase in the chunk"."""
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "
