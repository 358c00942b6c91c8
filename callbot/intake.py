"""Spoken complaint intake: the reports the bot takes down itself, as an agent would.

A report is a kind (illegal parking, large waste) with the details it needs, asked one at a
time. What the caller says to a detail's question is read by that detail's parser: a vehicle
number is found in the words (digits said as digits or as Korean numerals), a place or an item
is what was said, less the filler. A detail the bot could misread (a place, a vehicle number,
an item) is read back for a yes or a no; nothing is filed unconfirmed. A detail the caller
cannot give (nothing usable, twice) ends the intake: the call goes to an agent with what was
collected.

Everything here is text in and decisions out; the call flow (``ivr.controller.intake``) plays
the prompts and keeps the state with the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

Parser = Callable[[str], str | None]

# The middle syllable of a Korean number plate (private, business and rental cars).
PLATE_SYLLABLES = ("가나다라마거너더러머버서어저고노도로모보소오조구누두루무부수우주"
                   "아바사자배하허호")
# The same, as foreign callers say them (Revised Romanization).
PLATE_ROMAN = {
    "ga": "가", "na": "나", "da": "다", "ra": "라", "la": "라", "ma": "마", "geo": "거",
    "neo": "너", "deo": "더", "reo": "러", "meo": "머", "beo": "버", "seo": "서", "eo": "어",
    "jeo": "저", "go": "고", "no": "노", "do": "도", "ro": "로", "mo": "모", "bo": "보",
    "so": "소", "o": "오", "jo": "조", "gu": "구", "nu": "누", "du": "두", "ru": "루",
    "mu": "무", "bu": "부", "su": "수", "u": "우", "ju": "주", "a": "아", "ba": "바", "sa": "사",
    "ja": "자", "bae": "배", "ha": "하", "heo": "허", "ho": "호",
}
UNKNOWN_LETTER = "?"  # in a vehicle number whose Korean letter was not said
KOREAN_DIGITS = {"공": "0", "영": "0", "빵": "0", "일": "1", "이": "2", "삼": "3", "사": "4",
                 "오": "5", "육": "6", "륙": "6", "칠": "7", "팔": "8", "구": "9"}
ENGLISH_DIGITS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "to": "2", "too": "2",
                  "three": "3", "four": "4", "for": "4", "five": "5", "six": "6",
                  "seven": "7", "eight": "8", "nine": "9"}
FILLER = re.compile(r"^(음+|어+|아+|그+|저기요?|있잖아요|um+|uh+|well|so|it's|it is|"
                    r"the place is|they are|it was)[\s,.]+", re.IGNORECASE)
# Words that say "I don't know" rather than give a detail.
DONT_KNOW = ("모르", "몰라", "기억 안", "잘 안 보", "i don't know", "i do not know", "no idea",
             "not sure", "can't see", "cannot see", "don't remember")
NOW = ("지금", "방금", "아까부터", "계속", "now", "right now", "just now", "still")


def _tidy(text: str) -> str:
    text = " ".join(text.replace("…", " ").split()).strip(" .,!?")
    while (shorter := FILLER.sub("", text)) != text:
        text = shorter.strip(" .,!?")
    return text


def _says_dont_know(text: str) -> bool:
    lowered = text.lower()
    return any(phrase in lowered for phrase in DONT_KNOW)


def vehicle_number(text: str) -> str | None:
    """A Korean vehicle number in what was said ("12가 3456", "123 가 4567", "십이가
    삼사오육", "one two ga three four five six"), as written on the plate, or None."""
    squeezed = re.sub(r"[\s\-.,]", "", text)
    plate = re.search(rf"(\d{{2,3}})([{PLATE_SYLLABLES}])(\d{{4}})", squeezed)
    if plate:
        return "".join(plate.groups())
    # Digits said one by one in Korean numerals, around the plate's syllable: the syllable is
    # the one (of the plate's) that leaves 2-3 digits before it and 4 after.
    for cut, syllable in enumerate(squeezed):
        if syllable not in PLATE_SYLLABLES:
            continue
        before, after = _korean_digits(squeezed[:cut]), _korean_digits(squeezed[cut + 1:])
        if before is not None and after is not None and len(after) == 4 and (
                2 <= len(before) <= 3):
            return f"{before}{syllable}{after}"
    words = re.findall(r"[a-z]+|\d", text.lower())
    digits_before, syllable_found, digits_after = "", "", ""
    for word in words:
        digit = word if word.isdigit() else ENGLISH_DIGITS.get(word)
        if digit is not None:
            if syllable_found:
                digits_after += digit
            else:
                digits_before += digit
        elif word in PLATE_ROMAN and digits_before and not syllable_found:
            syllable_found = PLATE_ROMAN[word]
    if syllable_found and 2 <= len(digits_before[-3:]) and len(digits_after) >= 4:
        return f"{digits_before[-3:]}{syllable_found}{digits_after[:4]}"
    # The digits alone (a caller who cannot say the Korean letter, or a line that lost it):
    # kept with the letter unknown, "12?3456", which with the place finds the car.
    digits = digits_before + digits_after
    if not syllable_found and len(digits) in (6, 7):
        return f"{digits[:-4]}{UNKNOWN_LETTER}{digits[-4:]}"
    return None


KOREAN_UNITS = {"십": 10, "백": 100, "천": 1000}


def _korean_digits(text: str) -> str | None:
    """Digits from text made only of digits and Korean numerals, else None: said one by one
    (삼사오육 -> 3456) or as a number (삼천사백오십육 -> 3456, 십이 -> 12)."""
    if not text or any(c not in KOREAN_DIGITS and c not in KOREAN_UNITS and not c.isdigit()
                       for c in text):
        return None
    if not any(character in KOREAN_UNITS for character in text):
        return "".join(KOREAN_DIGITS.get(character, character) for character in text)
    total, digit = 0, None
    for character in text:
        if character in KOREAN_UNITS:
            total += (digit if digit is not None else 1) * KOREAN_UNITS[character]
            digit = None
        elif digit is not None:
            return None  # two digits in a row inside a number: not a number
        else:
            digit = int(KOREAN_DIGITS.get(character, character))
    return str(total + (digit or 0))


def free_text(text: str) -> str | None:
    """A place or an item as the caller put it, less filler; None if nothing usable."""
    if _says_dont_know(text):
        return None
    tidy = _tidy(text)
    letters = sum(character.isalnum() for character in tidy)
    return tidy if letters >= 2 else None


def moment(text: str) -> str | None:
    """When it was seen, as said ("now" for 지금, 방금, just now...); None if nothing usable."""
    tidy = _tidy(text)
    if any(word == tidy.lower() or tidy.startswith(word) for word in NOW):
        return "now"
    return free_text(text)


@dataclass(frozen=True)
class Detail:
    name: str  # place, vehicle, when, item
    ask: str  # the prompt that asks for it
    parse: Parser
    read_back: bool  # read back for a yes or no before it counts


@dataclass(frozen=True)
class ReportKind:
    kind: str
    starts_from: tuple[str, ...]  # the question types that mean "I want to report this"
    topic: str  # the queue's topic if an agent takes over
    details: tuple[Detail, ...]

    def next_detail(self, collected: dict[str, str]) -> Detail | None:
        return next((d for d in self.details if d.name not in collected), None)


REPORT_KINDS = {
    "illegal_parking": ReportKind("illegal_parking", ("illegal_parking_report",), "traffic", (
        Detail("place", "intake_ask_place", free_text, read_back=True),
        Detail("vehicle", "intake_ask_vehicle", vehicle_number, read_back=True),
        Detail("when", "intake_ask_when", moment, read_back=False),
    )),
    "large_waste": ReportKind("large_waste", ("large_waste_disposal",), "general", (
        Detail("item", "intake_ask_item", free_text, read_back=True),
        Detail("place", "intake_ask_address", free_text, read_back=True),
        Detail("when", "intake_ask_pickup_day", moment, read_back=False),
    )),
}


def report_for(question_type: str | None) -> ReportKind | None:
    """The report a question type opens (illegal_parking_report -> illegal parking)."""
    return next((kind for kind in REPORT_KINDS.values() if question_type in kind.starts_from),
                None)


def spoken_plate(plate: str, language: str) -> str:
    """A vehicle number as it is read back: digit by digit, so the caller can check it."""
    characters = [c for c in plate if c != UNKNOWN_LETTER]
    if language == "ko":
        return " ".join(characters)
    syllables = {hangul: roman for roman, hangul in PLATE_ROMAN.items() if roman != "la"}
    return " ".join(syllables.get(character, character) for character in characters)


# Seoul's 25 districts (the ids of dialplans/dids.yaml), as a place names them.
DISTRICTS = {
    "jongno": "종로구", "jung": "중구", "yongsan": "용산구", "seongdong": "성동구",
    "gwangjin": "광진구", "dongdaemun": "동대문구", "jungnang": "중랑구", "seongbuk": "성북구",
    "gangbuk": "강북구", "dobong": "도봉구", "nowon": "노원구", "eunpyeong": "은평구",
    "seodaemun": "서대문구", "mapo": "마포구", "yangcheon": "양천구", "gangseo": "강서구",
    "guro": "구로구", "geumcheon": "금천구", "yeongdeungpo": "영등포구", "dongjak": "동작구",
    "gwanak": "관악구", "seocho": "서초구", "gangnam": "강남구", "songpa": "송파구",
    "gangdong": "강동구",
}


def district_of(place: str) -> str | None:
    """The district a place names ("강남구 역삼동...", "Mapo-gu, ..."), or None."""
    squeezed = place.replace(" ", "")
    lowered = place.lower()
    for district, name in sorted(DISTRICTS.items(), key=lambda item: -len(item[1])):
        if name in squeezed or re.search(rf"\b{district}(-gu)?\b", lowered):
            return district
    return None
