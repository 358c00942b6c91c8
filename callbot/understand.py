"""Understanding a caller's question: which question type of the knowledge base it is.

Callers do not say the phrasings of the knowledge base word for word. In Korean they drop or
change particles (수도요금이/수도 요금을/수도요금), put spaces anywhere and end sentences in many
ways (~요, ~나요, ~는데요). So a question is compared by its pieces, not its words:

- Korean: Unicode NFC, the usual particles and sentence endings cut from each word, fillers
  dropped, then the words run together (spacing no longer matters) and cut into syllable
  unigrams, bigrams and trigrams.
- English (and other Latin-script text): words without stopwords, cut to a simple stem, plus
  pairs of neighbouring stems. Chinese and Japanese characters: unigrams and bigrams.

Each piece is weighted by TF-IDF (a piece that few question types have says more) and the
question is scored against each question type by cosine similarity, mostly against all its
phrasings in one language taken together and partly against its closest single phrasing.

The confidence is not the score alone: a question must also be clearly closer to its best
question type than to the runner-up, and share enough with it that is distinctive ("요금" alone
fits many), otherwise the bot should ask which one the caller meant (``Match.candidates``)
rather than answer the wrong one.

A caller who asks for a person (상담원, 상담사, 직원 연결, agent, operator...) is always handed
over: ``wants_agent`` is set whatever else they said, and the rest of what they said still picks
the queue.

Pure Python: an index of a few hundred phrasings is built in about a tenth of a second and a
question is matched in about a millisecond.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from callbot.embeddings import Embedder
from callbot.knowledge import Entry
from callbot.morphemes import content_morphemes

# The bot reads an answer from this (calibrated) confidence on; between CONFIRM and ANSWER it
# asks "is it about <title>?" first; below CONFIRM it asks the caller to put it another way,
# or hands over. Chosen on the calibration questions for at most 3 % wrong answers read aloud.
ANSWER = 0.7
CONFIRM = 0.3

# How much the meaning (sentence embedding) counts beside the pieces, and the cosine below
# which two sentences have nothing in common (multilingual-e5 puts unrelated ones near 0.75).
_MEANING_WEIGHT = 2.0
_MEANING_FLOOR = 0.75
# Logistic calibration: intercept, then one weight per signal (see Understanding.signals).
_CALIBRATION = (-2.044, 7.236, 5.694, -2.955, -8.158, -2.685)

# What a question shares with its match must weigh this much (in IDF: a piece only one
# question type has weighs about 4.4, one that most have about 1). "요금" alone, or "the bus",
# is too vague to answer, however similar it is.
_ENOUGH_EVIDENCE = 4.0
# How much the closest single phrasing counts, against all phrasings of the type together.
_CLOSEST_WEIGHT = 0.2

# --- Korean ----------------------------------------------------------------------------------

_HANGUL_RUN = re.compile(r"[가-힣]+")
_LATIN_RUN = re.compile(r"[a-z]+(?:'[a-z]+)?")
_DIGITS = re.compile(r"[0-9]+")
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]+")  # kana and Han

# Sentence endings and particles cut from the end of a word, longest first. They say how the
# caller speaks, not what they ask. A cut never leaves less than two syllables, so that short
# nouns survive (수도 is not 수 + 도).
_KOREAN_SUFFIXES = frozenset({
    # sentence endings
    "하고싶습니다", "하고싶어요", "하고싶은데요", "하고싶은데", "싶습니다", "싶어요", "싶은데요",
    "싶은데", "하려고요", "하려구요", "하려고", "하려면", "할려면", "려면", "려고요", "려구요",
    "합니까", "하나요", "하는데요", "했는데요", "했어요", "해요", "해야", "합니다", "할까요",
    "되나요", "됩니까", "됐어요", "되요", "돼요", "인가요", "인데요", "이에요", "예요", "에요",
    "입니까", "입니다", "나요", "는데요", "은데요", "는데", "은데", "는지", "은지", "어요",
    "아요", "습니다", "까요", "세요", "주세요", "해주세요", "드립니다", "드려요", "할게요",
    "할께요", "할래요", "하려는데요", "하려는데", "려는데요", "려는데", "거든요", "던데요",
    "잖아요", "같아요", "같은데요", "같은데", "인지", "는지요",
    # particles
    "에서는", "에서도", "에서", "에게", "한테", "께서", "으로는", "으로", "로는", "이랑", "랑",
    "하고", "이나", "이요", "까지", "부터", "마다", "보다", "처럼", "이", "가", "을", "를",
    "은", "는", "에", "의", "도", "만", "로", "와", "과", "요",
})
_SUFFIX_LENGTHS = sorted({len(suffix) for suffix in _KOREAN_SUFFIXES}, reverse=True)

# Words that carry no question: fillers, politeness, "tell me", "how", and what people say on
# a phone line (여보세요, 들리세요). Dropped whole, before or after cutting their ending.
_KOREAN_FILLERS = frozenset({
    "좀", "저", "제가", "저기", "저기요", "그", "그게", "혹시", "네", "예", "아", "음", "어",
    "그냥", "지금", "알려", "알려주세요", "알려줘요", "알려줘", "알려주실래요", "궁금합니다",
    "궁금해요", "궁금한데요", "문의", "문의드립니다", "문의합니다", "어떻게", "어떡해요",
    "어떻게요", "어디", "어디서", "언제", "뭐", "무엇", "부탁드립니다", "부탁합니다", "안녕하세요",
    "수", "있나요", "있어요", "있습니까", "되나요", "돼요", "해요", "하나요", "방법",
    "여보세요", "들리세요", "들려요", "안들려요", "잠깐만요", "잠시만요", "감사합니다",
    "고맙습니다", "아니요", "아니", "그러니까", "있잖아요",
    # wanting and being able to, standing alone after the word they follow
    "싶어요", "싶어", "싶습니다", "싶은데요", "싶은데", "싶은", "가능한가요", "가능해요",
    "가능합니까", "가능한지", "가능", "같아요", "같은데요", "같은데",
})

# Words about asking itself (물어볼게요, 문의할게요, 질문이요): every caller is asking something.
_KOREAN_ASKING = ("물어보", "물어볼", "물어봐", "여쭤", "여쭈", "문의", "질문")

# --- English ---------------------------------------------------------------------------------

_ENGLISH_STOPWORDS = frozenset("""
a an the i me my mine we our you your he she it its they them their this that these those
is am are was were be been being do does did doing have has had having will would shall should
can could may might must to of in on at by for with from into about as and or but if so
what when where which who whom why how there here please hello hi thanks thank want need like
get got some any just also very much too up out tell know let s t don't i'm it's can't
yes no ok okay um uh hear listen sorry excuse question questions ask asking inquiry
""".split())

# Suffixes cut from English words (after a plural s), so that tow/towed/towing, rent/rental
# and pay/payment meet; the stem keeps three letters at least.
_ENGLISH_SUFFIXES = ("ation", "ment", "ing", "ed", "er", "ly", "al")


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


def _strip_korean(word: str) -> str:
    for _ in range(2):  # an ending after a particle: 요금이에요 -> 요금이 -> 요금
        for length in _SUFFIX_LENGTHS:
            if len(word) - length >= 2 and word[-length:] in _KOREAN_SUFFIXES:
                word = word[:-length]
                break
        else:
            break
    return word


def _stem_english(word: str) -> str:
    if len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us")):
        word = word[:-1]
    for suffix in _ENGLISH_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:  # bike/bikes, arrive/arrival
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousl":  # stopped
        word = word[:-1]
    return word


def _ngrams(run: str, sizes: Iterable[int]) -> Iterable[str]:
    for size in sizes:
        for start in range(len(run) - size + 1):
            yield run[start:start + size]


def features(text: str, morphemes: bool = True) -> Counter[str]:
    """The pieces a question is compared by, with their counts."""
    found: Counter[str] = Counter()
    if morphemes and _HANGUL_RUN.search(text):
        found.update(f"m:{form}" for form in content_morphemes(_normalise(text))
                     if _HANGUL_RUN.fullmatch(form) and form not in _KOREAN_FILLERS)
    korean: list[str] = []
    english: list[str] = []
    for word in _normalise(text).split():
        for run in _HANGUL_RUN.findall(word):
            stem = _strip_korean(run)
            if (run not in _KOREAN_FILLERS and stem not in _KOREAN_FILLERS
                    and not run.startswith(_KOREAN_ASKING)):
                korean.append(stem)
        for run in _LATIN_RUN.findall(word):
            if run not in _ENGLISH_STOPWORDS:
                english.append(_stem_english(run.replace("'", "")))
        for run in _CJK_RUN.findall(word):
            found.update(f"c:{gram}" for gram in _ngrams(run, (1, 2)))
        found.update(f"n:{number}" for number in _DIGITS.findall(word))
    # Spacing is unreliable in Korean: the words are joined before cutting into syllables.
    # Single syllables count too, for the short words that matter (물, 차, 집, 개).
    joined = "".join(korean)
    found.update(f"k:{gram}" for gram in _ngrams(joined, (1, 2, 3)))
    found.update(f"w:{stem}" for stem in english)
    found.update(f"b:{a}_{b}" for a, b in pairwise(english))
    return found


# --- asking for a person ---------------------------------------------------------------------

# A request for a person, not a mention of one ("상담원이 불친절했어요", "an agent was rude to
# me" are complaints): the word for a person followed by asking to be put through, or said
# alone. Korean phrases match with or without spaces between their syllables.
_PERSON_KOREAN = r"(상담원|상담사|상담 직원|교환원|사람|직원)\s*(님)?"
_ASKING_KOREAN = (r"(연결|바꿔|통화하고|통화할|통화 하고|이?랑 통화|하고 통화|과 통화|"
                  r"이?랑 얘기|하고 얘기|이랑 이야기|좀 부탁|부탁)")
_AGENT_KOREAN = re.compile(
    rf"{_PERSON_KOREAN}\s*(좀\s*)?{_ASKING_KOREAN}|^\s*(상담원|상담사)\s*(님)?\s*(이요|요|좀)?\s*$|"
    r"진짜\s*사람|담당자\s*(님)?\s*(좀\s*)?(연결|바꿔)")
_AGENT_ENGLISH = re.compile(
    r"\b((talk|speak|connect|transfer|put)( me)?( through)? (to|with) (an? |the |some )?"
    r"(real |live )?(agent|operator|human|person|representative|staff)|"
    r"^\s*(an? )?(agent|operator|human|representative|real person)( please)?\s*[.!?]?\s*$|"
    r"(agent|operator|representative),? please)\b")


def _without_agent_request(text: str) -> tuple[str, bool]:
    """The text without its requests for a person, and whether there was one."""
    rest, english = _AGENT_ENGLISH.subn(" ", _normalise(text))
    rest, korean = _AGENT_KOREAN.subn(" ", rest)
    return rest, bool(english or korean)


def asks_for_agent(text: str) -> bool:
    """Does the caller ask to speak with a person?"""
    return _without_agent_request(text)[1]


# --- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A question type the caller may mean, and how similar the question was to it (0..1)."""

    question_type: str
    topic: str
    skill: str
    score: float
    meaning: float = 0.0  # cosine of the meanings (0 without an embedder)


@dataclass(frozen=True)
class Match:
    """What the caller asked, as far as the bot understood it.

    ``question_type`` and ``answer`` are set only when ``confidence`` reaches ANSWER;
    ``topic`` and ``skill`` when ``topic_confidence`` does (the question may be unclear while
    its topic is not: which queue to hand over to). ``candidates`` are the closest question
    types, best first, for asking the caller which one they meant.
    """

    question_type: str | None
    topic: str | None
    skill: str | None
    confidence: float
    answer: str | None
    wants_agent: bool
    topic_confidence: float = 0.0
    candidates: tuple[Candidate, ...] = ()
    # Not sure enough to answer, sure enough to ask: "is your question about <title>?"
    confirm: Candidate | None = None


Vector = dict[str, float]
_Index = dict[str, list[tuple[int, float]]]  # piece -> [(vector number, weight)]


def _unit(weights: Vector) -> Vector:
    norm = math.sqrt(sum(value * value for value in weights.values()))
    return {key: value / norm for key, value in weights.items()} if norm else {}


class Understanding:
    """The question types of a knowledge base, indexed for matching callers' questions.

    Two views of a question are combined: its pieces (syllables and morphemes, TF-IDF, above),
    which are exact about the words, and its meaning (a sentence embedding, when an
    ``Embedder`` is given), which also sees a question put in other words. Colloquial words
    (``synonyms``: 물값 -> 수도 요금) are read as what they mean, in the question and in the
    phrasings alike.
    """

    def __init__(self, entries: Sequence[Entry], synonyms: Mapping[str, str] | None = None,
                 embedder: Embedder | None = None) -> None:
        self.entries = {entry.id: entry for entry in entries}
        self.synonyms = _synonym_table(synonyms or {})
        phrasings: list[tuple[str, Counter[str]]] = []
        texts: list[tuple[str, str]] = []
        # All the phrasings of a question type in one language taken together: one language
        # per vector, so that a Korean question is not measured against English words too.
        together: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        pieces_of: dict[str, set[str]] = defaultdict(set)
        for entry in entries:
            for language, questions in entry.phrasings.items():
                for question in questions:
                    counts = features(self.expand(question))
                    phrasings.append((entry.id, counts))
                    texts.append((entry.id, question))
                    together[(entry.id, language)].update(counts)
                    pieces_of[entry.id].update(counts)
        # Inverse document frequency over question types: a piece that many types share
        # (버스, 신청, how) tells them apart less.
        document_frequency: Counter[str] = Counter()
        for pieces in pieces_of.values():
            document_frequency.update(pieces)
        total = max(len(pieces_of), 1)
        self._idf = {piece: math.log(1 + total / df) for piece, df in document_frequency.items()}
        self._pieces_of = dict(pieces_of)
        # A piece no question type has weighs the most: a question that is mostly unknown
        # words matches nothing well.
        self._unknown_idf = math.log(1 + total)
        self._phrasing_owner = [entry_id for entry_id, _ in phrasings]
        self._by_phrasing = self._index(counts for _, counts in phrasings)
        self._together_owner = [entry_id for entry_id, _ in together]
        self._by_together = self._index(together.values())
        # Meaning: every phrasing (and title) as a vector; a type scores its closest one.
        self._embedder = embedder
        if embedder is not None:
            for entry in entries:
                texts.extend((entry.id, title) for title in entry.title.values())
            self._meaning_owner = [entry_id for entry_id, _ in texts]
            self._meanings = embedder.passages([text for _, text in texts])

    def expand(self, text: str) -> str:
        """The text with each colloquial word it holds put in the words it means (물값 ->
        수도 요금), however it is spaced: the words the knowledge base knows, in place of
        one it may not know at all."""
        if not self.synonyms:
            return text
        squeezed = _normalise(text).replace(" ", "")
        found = [(word, meaning) for word, meaning in self.synonyms if word in squeezed]
        if not found:
            return text
        text = _normalise(text)
        for word, meaning in found:  # longest first: 주차딱지 before 딱지
            text = re.sub(r"\s*".join(map(re.escape, word)), f" {meaning} ", text)
        return " ".join(text.split())

    def _weights(self, counts: Counter[str]) -> Vector:
        return {piece: (1 + math.log(count)) * self._idf.get(piece, self._unknown_idf)
                for piece, count in counts.items()}

    def _vector(self, counts: Counter[str]) -> Vector:
        return _unit(self._weights(counts))

    def evidence(self, text: str, question_type: str) -> float:
        """The weight of what ``text`` shares with a question type (norm of TF-IDF weights)."""
        shared = self._pieces_of.get(question_type, set())
        weights = self._weights(features(self.expand(text)))
        return math.sqrt(sum(weight * weight for piece, weight in weights.items()
                             if piece in shared))

    def _index(self, vectors: Iterable[Counter[str]]) -> _Index:
        # Inverted: a question only touches the vectors that share a piece with it.
        index: _Index = defaultdict(list)
        for number, counts in enumerate(vectors):
            for piece, weight in self._vector(counts).items():
                index[piece].append((number, weight))
        return index

    @staticmethod
    def _best_by_owner(query: Vector, index: _Index, owners: list[str]) -> dict[str, float]:
        """Cosine of ``query`` with every indexed vector: the best one of each question type."""
        dot: dict[int, float] = defaultdict(float)
        for piece, weight in query.items():
            for number, other in index.get(piece, ()):
                dot[number] += weight * other
        best: dict[str, float] = {}
        for number, score in dot.items():
            owner = owners[number]
            best[owner] = max(best.get(owner, 0.0), score)
        return best

    def scores(self, text: str) -> dict[str, float]:
        """Every question type that shares a piece with ``text``, with its score (0..1)."""
        query = self._vector(features(self.expand(text)))
        closest = self._best_by_owner(query, self._by_phrasing, self._phrasing_owner)
        together = self._best_by_owner(query, self._by_together, self._together_owner)
        return {entry_id: _CLOSEST_WEIGHT * closest.get(entry_id, 0.0)
                + (1 - _CLOSEST_WEIGHT) * score for entry_id, score in together.items()}

    def meaning_scores(self, text: str) -> dict[str, float]:
        """The cosine of the question's meaning with each type's closest phrasing."""
        if self._embedder is None or not self._meaning_owner:
            return {}
        similarity = self._meanings @ self._embedder.query(self.expand(text))
        best: dict[str, float] = {}
        for owner, value in zip(self._meaning_owner, similarity.tolist(), strict=True):
            if value > best.get(owner, -1.0):
                best[owner] = value
        return best

    def _ranked(self, text: str, exclude: Collection[str] = ()) -> list[Candidate]:
        words = self.scores(text)
        meaning = self.meaning_scores(text)
        combined = {entry_id: words.get(entry_id, 0.0)
                    + _MEANING_WEIGHT * max(0.0, value - _MEANING_FLOOR) / (1 - _MEANING_FLOOR)
                    for entry_id, value in meaning.items()} if meaning else dict(words)
        ranked = sorted(((entry_id, score) for entry_id, score in combined.items()
                         if entry_id not in exclude and score > 0),
                        key=lambda item: (-item[1], item[0]))
        return [self._candidate(entry_id, score, meaning.get(entry_id, 0.0))
                for entry_id, score in ranked]

    def _candidate(self, entry_id: str, score: float, meaning: float = 0.0) -> Candidate:
        entry = self.entries[entry_id]
        return Candidate(entry_id, entry.topic, entry.skill, round(score, 4),
                         round(meaning, 4))

    def candidates(self, text: str, limit: int = 3) -> list[Candidate]:
        """The closest question types, best first: what to offer when not sure."""
        return self._ranked(text)[:limit]

    def signals(self, text: str, exclude: Collection[str] = ()) -> tuple[
            list[Candidate], list[float], list[float]]:
        """The ranked candidates and what the confidences are computed from: the best score,
        its lead over the runner-up, the evidence, the best meaning and its lead; then the
        same with the leads over the best candidate of another topic (for the topic)."""
        ranked = self._ranked(text, exclude)
        if not ranked:
            return ranked, [], []
        best = ranked[0]
        evidence = min(1.0, self.evidence(text, best.question_type) / _ENOUGH_EVIDENCE)

        def leads(others: list[Candidate]) -> list[float]:
            runner_up = others[0].score if others else 0.0
            meaning = max((c.meaning for c in others[:5]), default=0.0)
            return [best.score, (best.score - runner_up) / best.score, evidence, best.meaning,
                    best.meaning - meaning]

        other_topics = [c for c in ranked[1:] if c.topic != best.topic]
        return ranked, leads(ranked[1:]), leads(other_topics)

    def match(self, text: str, language: str, exclude: Collection[str] = ()) -> Match:
        """What the caller asked, with the answer in ``language`` (else English, else Korean).

        ``exclude``: question types to leave out (to measure questions the knowledge base does
        not cover)."""
        # Someone who asks for a person gets one; what else they said still picks the queue
        # ("수도요금 때문에 상담원 연결해 주세요" goes to the water agents).
        rest, wants_agent = _without_agent_request(text)
        ranked, signals, topic_signals = self.signals(rest, exclude)
        if not ranked:
            return Match(None, None, None, 0.0, None, wants_agent)
        best = ranked[0]
        sure = calibrated(signals)
        # The topic is at least as sure as the type: close candidates often share it.
        topic_sure = max(sure, calibrated(topic_signals))
        answered = sure >= ANSWER
        routed = topic_sure >= CONFIRM
        return Match(
            question_type=best.question_type if answered else None,
            topic=best.topic if routed else None,
            skill=best.skill if routed else None,
            confidence=round(sure, 4),
            answer=self.entries[best.question_type].answer_in(language) if answered else None,
            wants_agent=wants_agent,
            topic_confidence=round(topic_sure, 4),
            candidates=tuple(ranked[:3]),
            confirm=best if CONFIRM <= sure < ANSWER else None,
        )


def _synonym_table(synonyms: Mapping[str, str]) -> list[tuple[str, str]]:
    """Words without spaces, longest first (주차딱지 before 딱지)."""
    table = {_normalise(word).replace(" ", ""): meaning for word, meaning in synonyms.items()
             if word.strip()}
    return sorted(table.items(), key=lambda item: (-len(item[0]), item[0]))


def calibrated(signals: Sequence[float]) -> float:
    """The probability that the best candidate is the question type asked (0..1), from the
    match's signals, by a logistic model fitted on questions apart from the knowledge base
    and the held-out test set (``bench/calibrate.py``)."""
    if not signals:
        return 0.0
    z = _CALIBRATION[0] + sum(w * x for w, x in zip(_CALIBRATION[1:], signals, strict=True))
    return 1 / (1 + math.exp(-z))
