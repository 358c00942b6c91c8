"""How well the callbot understands questions written apart from its knowledge base.

- ``evaluate``: on a set of questions (``tests/data/heldout/``: each question's expected type,
  or ``none`` for one the knowledge base does not cover), what the bot would do with each
  (answer, ask to confirm, or hand over) and how often that is right: topic and question-type
  accuracy, wrong answers read aloud, answers reached, and how well the confidence is
  calibrated. A confirming question is answered the way a caller would: yes only if it names
  the question they asked.
- ``python -m bench.calibrate`` fits the confidence's logistic model on other questions
  (``tests/data/calibration/``), never on the held-out set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from callbot.embeddings import shared_embedder
from callbot.knowledge import Entry, load_seed, load_synonyms_file
from callbot.understand import Understanding

PROJECT = Path(__file__).resolve().parents[1]
HELD_OUT = PROJECT / "tests" / "data" / "heldout"
CALIBRATION = PROJECT / "tests" / "data" / "calibration"
OUT_OF_DOMAIN = "none"


@dataclass(frozen=True)
class Question:
    expected: str  # a question type, or OUT_OF_DOMAIN
    text: str
    language: str


def held_out(folder: Path = HELD_OUT) -> list[Question]:
    """Every question of the held-out files: ``ko:`` and ``en:`` lists of {id, q}."""
    questions = []
    for file in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for language in ("ko", "en"):
            for item in data.get(language) or []:
                questions.append(Question(str(item["id"]), str(item["q"]), language))
    return questions


def calibration_questions(folder: Path = CALIBRATION) -> list[Question]:
    """The questions the confidence is fitted on: ``ko.yaml`` and ``en.yaml`` (questions of
    covered types) and ``out_of_domain.yaml`` (in the held-out format)."""
    questions = []
    for language in ("ko", "en"):
        data = yaml.safe_load((folder / f"{language}.yaml").read_text(encoding="utf-8"))
        questions += [Question(str(item["id"]), str(item["q"]), language)
                      for item in data["questions"]]
    data = yaml.safe_load((folder / "out_of_domain.yaml").read_text(encoding="utf-8"))
    questions += [Question(OUT_OF_DOMAIN, str(item["q"]), language)
                  for language in ("ko", "en") for item in data.get(language) or []]
    return questions


def understanding(embedded: bool = True) -> tuple[Understanding, list[Entry]]:
    entries = load_seed(PROJECT / "knowledge" / "seed")
    synonyms = load_synonyms_file(PROJECT / "knowledge" / "synonyms.yaml")
    embedder = shared_embedder(PROJECT / ".cache" / "models" / "e5-passages.npz") \
        if embedded else None
    return Understanding(entries, synonyms, embedder), entries


@dataclass
class Tally:
    questions: int = 0
    in_domain: int = 0
    topic_right: int = 0
    type_right: int = 0
    answered_right: int = 0  # read the right answer, directly or after a confirmation
    confirmed: int = 0  # asked a confirming question
    wrong_answers: int = 0  # read an answer for another question
    handed_over: int = 0
    out_of_domain: int = 0
    out_of_domain_handed_over: int = 0
    # calibration: (confidence, the best candidate was right) for every question
    confidences: list[tuple[float, bool]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        def share(part: int, whole: int) -> float:
            return round(part / whole, 4) if whole else 0.0

        return {
            "questions": self.questions, "in_domain": self.in_domain,
            "out_of_domain": self.out_of_domain,
            "topic_accuracy": share(self.topic_right, self.in_domain),
            "question_type_accuracy": share(self.type_right, self.in_domain),
            "answered_right": share(self.answered_right, self.in_domain),
            "wrong_answer_rate": share(self.wrong_answers, self.questions),
            "confirm_rate": share(self.confirmed, self.questions),
            "out_of_domain_handed_over": share(self.out_of_domain_handed_over,
                                               self.out_of_domain),
            "calibration_error": expected_calibration_error(self.confidences),
        }


def evaluate(model: Understanding, entries: Iterable[Entry],
             questions: Iterable[Question]) -> Tally:
    topic_of = {entry.id: entry.topic for entry in entries}
    tally = Tally()
    for question in questions:
        tally.questions += 1
        match = model.match(question.text, question.language)
        best = match.candidates[0].question_type if match.candidates else None
        covered = question.expected != OUT_OF_DOMAIN
        right = covered and best == question.expected
        tally.confidences.append((match.confidence, right))
        said: str | None
        if match.question_type is not None:
            said = match.question_type
        elif match.confirm is not None:
            tally.confirmed += 1
            said = match.confirm.question_type if match.confirm.question_type == \
                question.expected else None  # the caller says no to any other
        else:
            said = None
        if covered:
            tally.in_domain += 1
            tally.type_right += right
            tally.topic_right += best is not None and topic_of.get(best) == \
                topic_of.get(question.expected)
            tally.answered_right += said == question.expected
        else:
            tally.out_of_domain += 1
            tally.out_of_domain_handed_over += said is None
        if said is not None and said != question.expected:
            tally.wrong_answers += 1
            tally.wrong.append(f"{question.language} {question.expected} <- {said} "
                               f"{match.confidence:.2f}: {question.text}")
        if said is None:
            tally.handed_over += 1
    return tally


def expected_calibration_error(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    """How far the confidence is from the share of right answers, averaged over 10 bins
    weighted by how many questions fall in each (0: perfectly calibrated)."""
    if not pairs:
        return 0.0
    total = 0.0
    for number in range(bins):
        low, high = number / bins, (number + 1) / bins
        inside = [(c, r) for c, r in pairs if low <= c < high or (number == bins - 1 and c == 1)]
        if inside:
            mean_confidence = sum(c for c, _ in inside) / len(inside)
            accuracy = sum(r for _, r in inside) / len(inside)
            total += len(inside) * abs(mean_confidence - accuracy)
    return round(total / len(pairs), 4)


def main() -> None:
    """Print the figures on the held-out set, with and without the sentence embeddings."""
    questions = held_out()
    for embedded in (True, False):
        model, entries = understanding(embedded)
        tally = evaluate(model, entries, questions)
        for language in ("ko", "en"):
            part = evaluate(model, entries, [q for q in questions if q.language == language])
            print(f"{'with' if embedded else 'without'} meaning, {language}: {part.figures()}")
        if embedded:
            print("\n".join(tally.wrong))


if __name__ == "__main__":
    main()
