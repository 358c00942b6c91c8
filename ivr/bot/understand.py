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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from ivr.bot.knowledge import Entry

# A question type is answered from this confidence on; below it the bot asks which of the
# candidates the caller meant, or hands over. Topics use the same bar.
CONFIDENT = 0.4

# A similarity this high is as good as a match gets (a caller's question is never a phrasing
# word for word): at or above it the strength of a match is full.
_FULL_SCORE = 0.3
# The runner-up must be this far behind (a quarter of the best score) for a clear lead.
_CLEAR_LEAD = 0.25
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


def features(text: str) -> Counter[str]:
    """The pieces a question is compared by, with their counts."""
    found: Counter[str] = Counter()
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

# Korean phrases match with or without spaces between their syllables (상담원 연결, 상담원연결).
_AGENT_KOREAN_PHRASES = (
    "상담원", "상담사", "상담 직원", "교환원", "사람이랑", "사람하고", "사람과 통화",
    "사람 바꿔", "사람 좀 바꿔", "사람 연결", "사람 좀 연결", "진짜 사람", "직원 연결",
    "직원 좀 연결", "직원이랑", "직원하고", "직원과 통화", "직원 바꿔", "담당자 연결",
    "담당자 바꿔", "담당자랑", "담당자하고",
)  # not 직원 alone: "주민센터 직원이 불친절했어요" is a complaint, not a request
_AGENT_KOREAN = re.compile("|".join(r"\s*".join(phrase.replace(" ", ""))
                                    for phrase in _AGENT_KOREAN_PHRASES))
_AGENT_ENGLISH = re.compile(
    r"\b(agents?|operators?|human|representative|(real|live) person|"
    r"(to|with) a (real |live )?person|(talk|speak) (to|with) (someone|somebody|staff))\b")


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


@dataclass(frozen=True)
class Match:
    """What the caller asked, as far as the bot understood it.

    ``question_type`` and ``answer`` are set only when ``confidence`` reaches CONFIDENT;
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


def confidence(best: float, runner_up: float, evidence: float) -> float:
    """How sure a match is (0..1): a strong score, clearly ahead of the runner-up, on enough
    evidence (the IDF weight of what the question shares with the match)."""
    if best <= 0:
        return 0.0
    strength = min(1.0, best / _FULL_SCORE)
    lead = min(1.0, (best - runner_up) / (best * _CLEAR_LEAD))
    enough = min(1.0, evidence / _ENOUGH_EVIDENCE)
    return round(strength * lead * enough, 4)


Vector = dict[str, float]
_Index = dict[str, list[tuple[int, float]]]  # piece -> [(vector number, weight)]


def _unit(weights: Vector) -> Vector:
    norm = math.sqrt(sum(value * value for value in weights.values()))
    return {key: value / norm for key, value in weights.items()} if norm else {}


class Understanding:
    """The question types of a knowledge base, indexed for matching callers' questions."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = {entry.id: entry for entry in entries}
        phrasings: list[tuple[str, Counter[str]]] = []
        # All the phrasings of a question type in one language taken together: one language
        # per vector, so that a Korean question is not measured against English words too.
        together: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        pieces_of: dict[str, set[str]] = defaultdict(set)
        for entry in entries:
            for language, questions in entry.phrasings.items():
                for question in questions:
                    counts = features(question)
                    phrasings.append((entry.id, counts))
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

    def _weights(self, counts: Counter[str]) -> Vector:
        return {piece: (1 + math.log(count)) * self._idf.get(piece, self._unknown_idf)
                for piece, count in counts.items()}

    def _vector(self, counts: Counter[str]) -> Vector:
        return _unit(self._weights(counts))

    def evidence(self, text: str, question_type: str) -> float:
        """The weight of what ``text`` shares with a question type (norm of TF-IDF weights)."""
        shared = self._pieces_of.get(question_type, set())
        weights = self._weights(features(text))
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
        """Every question type that shares something with ``text``, with its score (0..1)."""
        query = self._vector(features(text))
        closest = self._best_by_owner(query, self._by_phrasing, self._phrasing_owner)
        together = self._best_by_owner(query, self._by_together, self._together_owner)
        return {entry_id: _CLOSEST_WEIGHT * closest.get(entry_id, 0.0)
                + (1 - _CLOSEST_WEIGHT) * score for entry_id, score in together.items()}

    def _ranked(self, text: str) -> list[Candidate]:
        ranked = sorted(self.scores(text).items(), key=lambda item: (-item[1], item[0]))
        return [self._candidate(entry_id, score) for entry_id, score in ranked]

    def _candidate(self, entry_id: str, score: float) -> Candidate:
        entry = self.entries[entry_id]
        return Candidate(entry_id, entry.topic, entry.skill, round(min(score, 1.0), 4))

    def candidates(self, text: str, limit: int = 3) -> list[Candidate]:
        """The closest question types, best first: what to offer when not sure."""
        return self._ranked(text)[:limit]

    def match(self, text: str, language: str) -> Match:
        """What the caller asked, with the answer in ``language`` (else English, else Korean)."""
        # Someone who asks for a person gets one; what else they said still picks the queue
        # ("수도요금 때문에 상담원 연결해 주세요" goes to the water agents).
        rest, wants_agent = _without_agent_request(text)
        ranked = self._ranked(rest)
        if not ranked:
            return Match(None, None, None, 0.0, None, wants_agent)
        best = ranked[0]
        runner_up = ranked[1].score if len(ranked) > 1 else 0.0
        other_topic = next((c.score for c in ranked if c.topic != best.topic), 0.0)
        evidence = self.evidence(rest, best.question_type)
        sure = confidence(best.score, runner_up, evidence)
        topic_sure = confidence(best.score, other_topic, evidence)
        answered = sure >= CONFIDENT
        routed = topic_sure >= CONFIDENT
        return Match(
            question_type=best.question_type if answered else None,
            topic=best.topic if routed else None,
            skill=best.skill if routed else None,
            confidence=sure,
            answer=self.entries[best.question_type].answer_in(language) if answered else None,
            wants_agent=wants_agent,
            topic_confidence=topic_sure,
            candidates=tuple(ranked[:3]),
        )
