"""The hard LLM track's eight tasks (issue #27): the quick track's four and four more.

Same prompt format as the quick track (``benchmarks.llm.tasks``: instruction, input, ``Answer:``, the
answer with a leading space; no chat template).  The four new tasks:

* ``rt_subjectivity`` (classification, 2): does a Rotten Tomatoes snippet describe the plot or give an
  opinion (answers ``plot`` / ``opinion``);
* ``fortune_topic`` (classification, 6): the topic file of a fortune (computers, politics, science,
  poems, definitions, work);
* ``subtraction`` (generative, exact match): a − b for 10 ≤ b < a ≤ 99.  Its answers are numbers in
  the range of ``arithmetic``'s and its prompt has the same shape: the two tasks ask for different
  maps from the same-looking inputs to the same answer words (the interference case);
* ``number_words`` (generative, exact match): a number from 100 to 9999 written in English words
  (``4721`` → ``four thousand seven hundred twenty-one``): a skill unlike addition.

Sizes: test ``TEST_SIZE`` = 400 examples per task (every text task's test split is 400, balanced per
class), validation ``VALIDATION_SIZE`` = 128 (balanced subset of the text tasks' 240; the generated
tasks cut test, validation, train from one seeded shuffle, so the three are disjoint).
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

from benchmarks.llm.tasks import (
    CLASSIFICATION_TASKS, MAX_INPUT_TOKENS, ClassificationTask, Example, LMSplits, arithmetic_prompt, choice_examples,
    training_text, truncate,
)
from mergekit_awd.tools.lm_scoring import AnswerExample

TEST_SIZE = 400
VALIDATION_SIZE = 128
GENERATED_SEED = 0

HARD_CLASSIFICATION_TASKS: Dict[str, ClassificationTask] = {
    **CLASSIFICATION_TASKS,
    "rt_subjectivity": ClassificationTask(
        "rt_subjectivity", "Does this movie text describe the plot or give an opinion?", "Text", ("plot", "opinion"),
    ),
    "fortune_topic": ClassificationTask(
        "fortune_topic", "Is this quotation about computers, politics, science, poems, definitions or work?",
        "Quotation", ("computers", "politics", "science", "poems", "definitions", "work"),
    ),
}
GENERATIVE: Tuple[str, ...] = ("arithmetic", "subtraction", "number_words")
# The order of the eight tasks (the K sweep's subsets are drawn from it).
HARD_TASK_NAMES: Tuple[str, ...] = ("rt_sentiment", "fortune_language", "wordnet_supersense", "arithmetic",
                                    "rt_subjectivity", "fortune_topic", "subtraction", "number_words")
# Longest answer in tokens, for greedy decoding (EOS ends earlier ones).
MAX_NEW_TOKENS = {"arithmetic": 5, "subtraction": 5, "number_words": 16}

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_in_words(n: int) -> str:
    """English words of 0 ≤ n ≤ 9999, hyphenated tens (``twenty-one``), no "and"."""
    if not 0 <= n <= 9999:
        raise ValueError(f"{n} is outside 0 … 9999")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return f"{_ONES[n // 100]} hundred" + (f" {number_in_words(rest)}" if rest else "")
    rest = n % 1000
    return f"{_ONES[n // 1000]} thousand" + (f" {number_in_words(rest)}" if rest else "")


def subtraction_prompt(a: int, b: int) -> str:
    return f"Subtract the second number from the first.\nQuestion: What is {a} - {b}?\nAnswer:"


def number_words_prompt(n: int) -> str:
    return f"Write the number in words.\nNumber: {n}\nAnswer:"


def _generated(name: str) -> List[AnswerExample]:
    """Every example of a generated task, in its seeded order."""
    if name == "arithmetic":
        items = [(arithmetic_prompt(a, b), a + b) for a in range(10, 100) for b in range(10, 100)]
    elif name == "subtraction":
        items = [(subtraction_prompt(a, b), a - b) for a in range(11, 100) for b in range(10, a)]
    else:
        items = [(number_words_prompt(n), number_in_words(n)) for n in range(100, 10000)]
    random.Random(f"{name}/{GENERATED_SEED}").shuffle(items)
    return [AnswerExample(prompt, f" {answer}") for prompt, answer in items]


def k_subset(k: int, seed: int = 0) -> Tuple[str, ...]:
    """The K sweep's fixed task subset of size ``k`` (seeded draw, in ``HARD_TASK_NAMES`` order)."""
    if not 1 <= k <= len(HARD_TASK_NAMES):
        raise ValueError(f"K = {k} is outside 1 … {len(HARD_TASK_NAMES)}")
    chosen = set(random.Random(f"k_sweep/{k}/{seed}").sample(HARD_TASK_NAMES, k))
    return tuple(task for task in HARD_TASK_NAMES if task in chosen)


def hard_task_splits(name: str, tokenizer) -> LMSplits:
    """Train / validation / test examples of one of the eight tasks (deterministic, disjoint)."""
    if name in GENERATIVE:
        examples = _generated(name)
        return LMSplits(test=tuple(examples[:TEST_SIZE]),
                        validation=tuple(examples[TEST_SIZE:TEST_SIZE + VALIDATION_SIZE]),
                        train=tuple(examples[TEST_SIZE + VALIDATION_SIZE:]))
    from benchmarks.text_tasks.data import task_splits as text_splits
    from benchmarks.text_tasks.splits import balanced_subset

    task = HARD_CLASSIFICATION_TASKS[name]
    class_names, splits = text_splits(name)
    if len(class_names) != len(task.answers):
        raise ValueError(f"{name}: {len(class_names)} classes but {len(task.answers)} answers")
    return LMSplits(
        train=choice_examples(task, splits.train, tokenizer),
        validation=choice_examples(task, balanced_subset(splits.validation, VALIDATION_SIZE, len(class_names)),
                                    tokenizer),
        test=choice_examples(task, splits.test, tokenizer),
    )


__all__ = ["k_subset", "HARD_TASK_NAMES", "HARD_CLASSIFICATION_TASKS", "GENERATIVE", "MAX_NEW_TOKENS", "TEST_SIZE",
           "VALIDATION_SIZE", "number_in_words", "hard_task_splits", "Example", "training_text", "truncate",
           "MAX_INPUT_TOKENS"]
