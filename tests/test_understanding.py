"""The callbot's text side, without a server: the knowledge base (knowledge/seed.yaml, its
checks, seeding it into SQL) and understanding callers' questions.

The accuracy tests use held-out questions (tests/data/*_questions.yaml) written apart from the
seed's phrasings; they print how the matcher does (run with -s to see it).
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from callbot.knowledge import (
    Entry,
    KnowledgeEntry,
    KnowledgeError,
    load_entries,
    load_seed,
    menu_topics,
    seed_knowledge,
)
from callbot.understand import CONFIDENT, Understanding, asks_for_agent
from ivr.db import create_engine, init_schema, sessionmaker

PROJECT = Path(__file__).resolve().parents[1]
SEED = PROJECT / "knowledge" / "seed.yaml"
MENUS = PROJECT / "dialplans" / "menus.yaml"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def topics() -> list[str]:
    return menu_topics(MENUS)


@pytest.fixture(scope="module")
def entries(topics: list[str]) -> list[Entry]:
    return load_seed(SEED, topics)


@pytest.fixture(scope="module")
def understanding(entries: list[Entry]) -> Understanding:
    return Understanding(entries)


def held_out(name: str) -> list[dict[str, str]]:
    questions: list[dict[str, str]] = yaml.safe_load(
        (DATA / f"{name}_questions.yaml").read_text(encoding="utf-8"))["questions"]
    return questions


# --- the knowledge base ----------------------------------------------------------------------


def test_seed_loads_with_known_topics_and_both_answers(entries: list[Entry],
                                                       topics: list[str]) -> None:
    assert len(entries) >= 64
    assert topics == ["traffic", "water", "administration", "welfare", "culture", "general"]
    for entry in entries:
        assert entry.topic in topics and entry.skill in topics, entry.id
        assert entry.answer["ko"].strip() and entry.answer["en"].strip(), entry.id
        assert len(entry.phrasings.get("ko", [])) >= 4, entry.id
        assert len(entry.phrasings.get("en", [])) >= 3, entry.id
        # Plainly fake example numbers only: 02-000-xxxx is no Seoul exchange.
        assert re.fullmatch(r"02-000-\d{4}", entry.contact), entry.id
        for answer in entry.answer.values():
            assert "http" not in answer and "www" not in answer, entry.id  # read aloud by TTS
    # The common questions of the call center are all there.
    ids = {entry.id for entry in entries}
    assert {"water_bill_moving", "transit_lost_found", "subway_first_last", "passport_issue",
            "resident_registration_copy", "family_relation_certificate", "seal_certificate",
            "large_waste_disposal", "property_tax", "car_tax", "resident_tax", "basic_pension",
            "emergency_welfare", "child_allowance", "performance_info", "festival_info",
            "culture_facility_booking", "towed_car", "parking_fine"} <= ids


BROKEN = """\
entries:
  - id: water_bill_moving
    topic: water
    skill: water
    department: 상수도사업본부
    contact: 02-000-1101
    phrasings:
      ko: [이사 정산]
      en: [moving out]
    answer:
      ko: 정산해 드립니다.
  - id: bus_route
    topic: buses
    skill: traffic
    department: 버스정책과
    contact: 02-000-2101
    phrasings: {ko: [버스 노선]}
    answer: {ko: 안내합니다., en: We tell you.}
  - id: bus_route
    topic: traffic
    skill: traffic
    department: 버스정책과
    contact: 02-000-2101
    phrasings: {ko: [버스 노선]}
    answer: {ko: 안내합니다., en: We tell you., xx: "?"}
"""


def test_broken_entries_are_refused_naming_entry_and_field(tmp_path: Path,
                                                           topics: list[str]) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(KnowledgeError) as refused:
        load_seed(path, topics)
    problems = refused.value.problems
    assert len(problems) == 3, problems
    missing_english, unknown_topic, unknown_language = problems
    assert "entry 'water_bill_moving'" in missing_english
    assert "answer" in missing_english and "en" in missing_english
    assert missing_english.startswith("seed.yaml:10:")  # the line of answer:
    assert "entry 'bus_route'" in unknown_topic and "topic: 'buses'" in unknown_topic
    assert "entry 'bus_route'" in unknown_language and "answer" in unknown_language
    assert "unknown language 'xx'" in unknown_language


def test_an_id_given_twice_is_refused(tmp_path: Path) -> None:
    entry = ("  - {id: towed_car, topic: traffic, skill: traffic, department: 견인보관소, "
             "contact: 02-000-2113, phrasings: {ko: [견인]}, answer: {ko: 네., en: Yes.}}\n")
    path = tmp_path / "seed.yaml"
    path.write_text("entries:\n" + entry + entry, encoding="utf-8")
    with pytest.raises(KnowledgeError, match="entry 'towed_car': id: already used"):
        load_seed(path)


# --- understanding ---------------------------------------------------------------------------


def _plain(text: str) -> str:
    return re.sub(r"[\s?.!,]", "", unicodedata.normalize("NFC", text).lower())


def test_held_out_questions_are_really_held_out(entries: list[Entry]) -> None:
    phrasings = {_plain(question) for entry in entries
                 for questions in entry.phrasings.values() for question in questions}
    ids = {entry.id for entry in entries}
    for name in ("korean", "english"):
        questions = held_out(name)
        assert all(item["id"] in ids for item in questions)
        copied = [item["q"] for item in questions if _plain(item["q"]) in phrasings]
        assert not copied, f"test questions copied into the seed: {copied}"
    korean = held_out("korean")
    assert len(korean) >= 100
    assert len({item["id"] for item in korean}) >= 0.8 * len(ids)  # most question types


@dataclass
class Score:
    total: int = 0
    best_right: int = 0  # the best candidate is the right question type
    in_candidates: int = 0  # it is among the three offered when asking again
    answered_right: int = 0  # confident, and right: the caller hears the right answer
    answered_wrong: int = 0  # confident, and wrong: the caller hears a wrong answer

    def report(self, label: str) -> str:
        asked_again = self.total - self.answered_right - self.answered_wrong
        return (f"{label} understanding: {self.best_right}/{self.total} = "
                f"{self.best_right / self.total:.1%} (best match right; "
                f"{self.in_candidates / self.total:.1%} among 3 candidates). Answered "
                f"{self.answered_right + self.answered_wrong}: {self.answered_right} right, "
                f"{self.answered_wrong} wrong; {asked_again} asked to clarify.")


def _score(understanding: Understanding, questions: list[dict[str, str]],
           language: str) -> Score:
    score = Score()
    for item in questions:
        match = understanding.match(item["q"], language)
        offered = [candidate.question_type for candidate in match.candidates]
        score.total += 1
        score.best_right += offered[:1] == [item["id"]]
        score.in_candidates += item["id"] in offered
        score.answered_right += match.question_type == item["id"]
        score.answered_wrong += match.question_type not in (None, item["id"])
        assert not match.wants_agent, item["q"]
    return score


def test_korean_questions_are_understood(understanding: Understanding) -> None:
    score = _score(understanding, held_out("korean"), "ko")
    print("\n" + score.report("Korean"))
    assert score.best_right / score.total >= 0.8
    assert score.in_candidates / score.total >= 0.9
    assert score.answered_wrong / score.total <= 0.05  # unsure is better than wrong


def test_english_questions_are_understood(understanding: Understanding) -> None:
    questions = held_out("english")
    assert len(questions) >= 30
    score = _score(understanding, questions, "en")
    print("\n" + score.report("English"))
    assert score.best_right / score.total >= 0.75
    assert score.answered_wrong / score.total <= 0.05


def test_a_clear_question_gets_its_answer_in_the_callers_language(
        understanding: Understanding, entries: list[Entry]) -> None:
    by_id = {entry.id: entry for entry in entries}
    match = understanding.match("이사 가는데 수도 요금 정산은 어떻게 해요", "ko")
    assert match.question_type == "water_bill_moving"
    assert (match.topic, match.skill) == ("water", "water")
    assert match.confidence >= CONFIDENT
    assert match.answer == by_id["water_bill_moving"].answer["ko"]
    # No Chinese answer in the seed: English, the fallback of the foreign-language line.
    in_chinese = understanding.match("I'm moving out, how do I settle the water bill?", "zh")
    assert in_chinese.answer == by_id["water_bill_moving"].answer["en"]


def test_close_calls_offer_candidates_instead_of_guessing(
        understanding: Understanding) -> None:
    # "About a passport": making one or a lost one? Both fit about as well.
    match = understanding.match("여권 문의요", "ko")
    offered = [candidate.question_type for candidate in match.candidates]
    assert match.question_type is None and match.answer is None
    assert match.confidence < CONFIDENT
    assert {"passport_issue", "passport_lost"} == set(offered[:2])
    closest = understanding.candidates("여권 문의요", limit=2)
    assert [candidate.question_type for candidate in closest] == offered[:2]
    assert match.topic == "administration"  # not sure which question, sure of the queue
    # Too vague for an answer or even a queue: one word that many question types share.
    vague = understanding.match("요금 문의드려요", "ko")
    assert vague.question_type is None and vague.topic is None


@pytest.mark.parametrize("text", [
    "상담원 연결해 주세요", "상담사랑 통화하고 싶어요", "그냥 사람이랑 얘기할게요",
    "직원 연결 좀 해줘요", "상담원이요", "담당자 바꿔 주세요",
    "I want to talk to an agent", "operator please", "Can I speak to a person?", "human",
    "let me talk to a real person",
])
def test_asking_for_a_person_is_handed_over(understanding: Understanding, text: str) -> None:
    assert asks_for_agent(text)
    assert understanding.match(text, "ko").wants_agent


def test_an_agent_request_still_picks_the_queue(understanding: Understanding) -> None:
    match = understanding.match("재산세 고지서 때문에 그러는데 상담원 연결해 주세요", "ko")
    assert match.wants_agent
    assert match.candidates[0].question_type == "property_tax"
    assert match.skill == "administration"


def test_no_seed_phrasing_reads_as_asking_for_a_person(entries: list[Entry]) -> None:
    asking = [question for entry in entries for questions in entry.phrasings.values()
              for question in questions if asks_for_agent(question)]
    assert not asking


@pytest.mark.parametrize("text", [
    "", "   ", "ㅋㅋㅋㅋ", "asdf qwer zxcv", "블라블라 랄랄라 뿌뿌", "음 어 그",
    "여보세요 여보세요 잘 들리세요", "purple monkey dishwasher", "오늘 점심 뭐 먹지",
    "김치찌개 맛있게 끓이는 법", "tell me a joke",
])
def test_gibberish_and_chatter_are_not_answered(understanding: Understanding, text: str) -> None:
    match = understanding.match(text, "ko")
    assert match.confidence < CONFIDENT
    assert match.question_type is None and match.answer is None
    assert not match.wants_agent


def test_index_and_matching_are_quick(entries: list[Entry],
                                      understanding: Understanding) -> None:
    # Loose bounds (about ten times what it takes): a slow machine must not fail it.
    started = time.perf_counter()
    Understanding(entries)
    assert time.perf_counter() - started < 1.0
    questions = [item["q"] for item in held_out("korean")]
    started = time.perf_counter()
    for question in questions:
        understanding.match(question, "ko")
    assert (time.perf_counter() - started) / len(questions) < 0.01


# --- the knowledge base in SQL ---------------------------------------------------------------


NEW_ENTRY = """
  - id: seoul_bike_lanes
    topic: traffic
    skill: traffic
    department: 자전거정책과
    contact: 02-000-2199
    phrasings: {ko: [자전거 도로 어디 있나요], en: ["Where are the bike lanes?"]}
    answer: {ko: 자전거 도로를 안내해 드립니다., en: We can tell you where the bike lanes are.}
"""


async def test_seeding_adds_only_what_is_missing(tmp_path: Path, entries: list[Entry],
                                                 topics: list[str]) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'knowledge.db'}")
    try:
        await init_schema(engine)
        sessions = sessionmaker(engine)
        assert await seed_knowledge(sessions, SEED, topics) == len(entries)
        assert await seed_knowledge(sessions, SEED, topics) == 0

        # An admin edits an answer; the next start must not put the seed's back.
        async with sessions() as session:
            row = await session.get(KnowledgeEntry, "water_bill_moving")
            assert row is not None
            row.answers = {**row.answers, "ko": "이사 정산은 요금관리과로 문의하세요."}
            await session.commit()
        # A newer seed file with one more question type: only that one is added.
        newer = tmp_path / "seed.yaml"
        newer.write_text(SEED.read_text(encoding="utf-8") + NEW_ENTRY, encoding="utf-8")
        assert await seed_knowledge(sessions, newer, topics) == 1

        loaded = {entry.id: entry for entry in await load_entries(sessions)}
        assert len(loaded) == len(entries) + 1
        assert loaded["water_bill_moving"].answer["ko"] == "이사 정산은 요금관리과로 문의하세요."
        assert loaded["towed_car"] == next(e for e in entries if e.id == "towed_car")
        assert loaded["seoul_bike_lanes"].department == "자전거정책과"
        async with sessions() as session:
            stamps = (await session.scalars(select(KnowledgeEntry.updated_at))).all()
        assert all(stamp is not None for stamp in stamps)
        # What the database holds is what the bot understands.
        bot = Understanding(list(loaded.values()))
        assert bot.match("제 차가 견인됐어요", "ko").question_type == "towed_car"
    finally:
        await engine.dispose()
