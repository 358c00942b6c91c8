"""How the callbot reads the details of a complaint from what callers say (``callbot.intake``):
vehicle numbers said every way a caller says them, places and items less the filler, "I don't
know" never taken for a detail, and the district a place names."""

from __future__ import annotations

import pytest

from callbot.intake import (
    REPORT_KINDS,
    district_of,
    free_text,
    moment,
    report_for,
    spoken_plate,
    vehicle_number,
)


@pytest.mark.parametrize(("said", "plate"), [
    ("12가 3456", "12가3456"),
    ("차 번호는 123 가 4567 이에요", "123가4567"),
    ("십이 가 삼사오육", "12가3456"),  # digits as Korean numerals, one by one
    ("십이가 삼천사백오십육", "12가3456"),  # or as numbers
    ("백이십삼 허 사천오백육십칠", "123허4567"),  # a rental car's 허
    ("일이삼 가 사오육칠", "123가4567"),
    ("12-가-3456이요.", "12가3456"),
    ("one two ga three four five six", "12가3456"),
    ("It's 12 ga 3456.", "12가3456"),
    ("The number is 34 ho, 7 8 9 0", "34호7890"),
    ("1 2 3 4 5 6", "12?3456"),  # the letter not said: kept unknown, for the place to settle
    ("one two three, four five six seven", "123?4567"),
])
def test_vehicle_numbers_as_callers_say_them(said: str, plate: str) -> None:
    assert vehicle_number(said) == plate


@pytest.mark.parametrize("said", ["번호판이 안 보여요", "잘 모르겠어요", "이 차 번호가 뭐였더라",
                                  "I can't see it", "three four five six", "1 2 3", ""])
def test_no_vehicle_number_is_made_up(said: str) -> None:
    assert vehicle_number(said) is None


def test_places_and_items_as_said_less_the_filler() -> None:
    assert free_text("음 강남구 역삼동 테헤란로 123 앞이요") == "강남구 역삼동 테헤란로 123 앞이요"
    assert free_text("Um, in front of Gangnam station exit 3.") == (
        "in front of Gangnam station exit 3")
    assert free_text("소파 하나랑 장롱 하나요") == "소파 하나랑 장롱 하나요"
    for nothing in ("어", "음...", "모르겠어요", "I don't know", " "):
        assert free_text(nothing) is None


def test_when_it_was_seen() -> None:
    assert moment("지금요") == moment("방금 전에요") == moment("Right now.") == "now"
    assert moment("오늘 아침 7시부터") == "오늘 아침 7시부터"
    assert moment("기억 안 나요") is None


def test_the_district_a_place_names() -> None:
    assert district_of("강남구 역삼동 123") == "gangnam"
    assert district_of("서울 중구 명동길 14") == "jung"
    assert district_of("동대문구 청량리") == "dongdaemun"
    assert district_of("Mapo-gu, Hapjeong station") == "mapo"
    assert district_of("Jungnang, near the market") == "jungnang"
    assert district_of("역삼역 3번 출구") is None  # a place the agent must place


def test_plates_are_read_back_one_character_at_a_time() -> None:
    assert spoken_plate("12가3456", "ko") == "1 2 가 3 4 5 6"
    assert spoken_plate("12가3456", "en") == "1 2 ga 3 4 5 6"
    assert spoken_plate("12?3456", "en") == "1 2 3 4 5 6"


def test_the_reports_and_the_questions_that_open_them() -> None:
    parking = report_for("illegal_parking_report")
    assert parking is not None and parking.kind == "illegal_parking"
    assert [d.name for d in parking.details] == ["place", "vehicle", "when"]
    assert report_for("large_waste_disposal") is REPORT_KINDS["large_waste"]
    assert report_for("parking_fine") is None and report_for(None) is None
    assert parking.next_detail({"place": "x"}).name == "vehicle"  # type: ignore[union-attr]
    assert parking.next_detail({"place": "x", "vehicle": "y", "when": "now"}) is None
