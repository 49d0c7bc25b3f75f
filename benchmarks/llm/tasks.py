"""The LLM track's tasks as instruction prompts with short natural-word answers.

One plain prompt format for every model (no chat template: the same string is fed to the base, the
fine-tunes and every merge)::

    <instruction naming the candidate answers>
    <input>
    Answer:

followed by the answer with a leading space (`` positive``, `` 85``) and the EOS token in training.
Classification tasks are scored by rank classification over their answers (each one token in the
SmolLM2 tokenizer), the generative task ``arithmetic`` by greedy decoding and exact match.

Splits: the classification tasks reuse the MiniLM benchmark's balanced, seeded splits
(``benchmarks.text_tasks.splits``) and take the first ``validation_size`` / ``test_size`` examples of
them (balanced per class); ``arithmetic`` enumerates every pair a + b with 10 ≤ a, b ≤ 99, shuffles
them with a fixed seed and cuts test, validation, train in that order.  Inputs are cut to
``MAX_INPUT_TOKENS`` tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

from benchmarks.text_tasks.splits import Split, balanced_subset
from mergekit_awd.tools.lm_scoring import AnswerExample, ChoiceExample

MAX_INPUT_TOKENS = 40
TEST_SIZE = 160
VALIDATION_SIZE = 64
ARITHMETIC_SEED = 0

Example = Union[ChoiceExample, AnswerExample]


@dataclass(frozen=True)
class ClassificationTask:
    """A MiniLM-benchmark task re-posed as a question; ``answers`` in the task's class order."""

    name: str
    instruction: str
    input_label: str
    answers: Tuple[str, ...]

    def prompt(self, text: str) -> str:
        return f"{self.instruction}\n{self.input_label}: {text}\nAnswer:"


CLASSIFICATION_TASKS: Dict[str, ClassificationTask] = {
    task.name: task for task in (
        ClassificationTask(
            "rt_sentiment", "Is this movie review positive or negative?", "Review", ("positive", "negative"),
        ),
        ClassificationTask(
            "fortune_language",
            "Which language is this text in: English, German, Spanish, Italian, Polish or Portuguese?",
            "Text", ("English", "German", "Spanish", "Italian", "Polish", "Portuguese"),
        ),
        ClassificationTask(
            "wordnet_supersense",
            "Is this word an animal, object, body part, feeling, food, place, person or plant?",
            "Word", ("animal", "object", "body", "feeling", "food", "place", "person", "plant"),
        ),
    )
}
GENERATIVE_TASKS: Tuple[str, ...] = ("arithmetic",)
TASK_NAMES: Tuple[str, ...] = (*CLASSIFICATION_TASKS, *GENERATIVE_TASKS)


@dataclass(frozen=True)
class LMSplits:
    train: Tuple[Example, ...]
    validation: Tuple[Example, ...]
    test: Tuple[Example, ...]


def truncate(tokenizer, text: str, max_tokens: int = MAX_INPUT_TOKENS) -> str:
    """The text cut to its first ``max_tokens`` tokens (decoded back), unchanged when shorter."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]).strip()


def choice_examples(task: ClassificationTask, split: Split, tokenizer) -> Tuple[ChoiceExample, ...]:
    choices = tuple(" " + a for a in task.answers)
    return tuple(
        ChoiceExample(task.prompt(truncate(tokenizer, text)), choices, label)
        for text, label in zip(split.texts, split.labels)
    )


def arithmetic_prompt(a: int, b: int) -> str:
    return f"Add the two numbers.\nQuestion: What is {a} + {b}?\nAnswer:"


def arithmetic_splits(test_size: int = TEST_SIZE, validation_size: int = VALIDATION_SIZE) -> LMSplits:
    pairs: List[Tuple[int, int]] = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(f"arithmetic/{ARITHMETIC_SEED}").shuffle(pairs)
    examples = [AnswerExample(arithmetic_prompt(a, b), f" {a + b}") for a, b in pairs]
    return LMSplits(
        test=tuple(examples[:test_size]),
        validation=tuple(examples[test_size:test_size + validation_size]),
        train=tuple(examples[test_size + validation_size:]),
    )


def task_splits(name: str, tokenizer, test_size: int = TEST_SIZE, validation_size: int = VALIDATION_SIZE) -> LMSplits:
    """Train / validation / test examples of a task (deterministic, disjoint)."""
    if name in GENERATIVE_TASKS:
        return arithmetic_splits(test_size, validation_size)
    from benchmarks.text_tasks.data import task_splits as text_splits

    task = CLASSIFICATION_TASKS[name]
    class_names, splits = text_splits(name)
    if len(class_names) != len(task.answers):
        raise ValueError(f"{name}: {len(class_names)} classes but {len(task.answers)} answers")
    n = len(class_names)
    return LMSplits(
        train=choice_examples(task, splits.train, tokenizer),
        validation=choice_examples(task, balanced_subset(splits.validation, validation_size, n), tokenizer),
        test=choice_examples(task, balanced_subset(splits.test, test_size, n), tokenizer),
    )


def training_text(example: Example) -> Tuple[str, str]:
    """(prompt, answer) a fine-tune learns: the right choice for classification."""
    if isinstance(example, ChoiceExample):
        return example.prompt, example.choices[example.label]
    return example.prompt, example.answer


def is_generative(examples: Sequence[Example]) -> bool:
    return bool(examples) and isinstance(examples[0], AnswerExample)


# General-English text for perplexity: fortune files used by no task of either benchmark
# (not fortune_language's English files, not fortune_topic's categories).
PERPLEXITY_FORTUNE_FILES: Tuple[str, ...] = ("art", "kids", "law", "medicine", "news", "sports")
PERPLEXITY_TEXTS = 96
PERPLEXITY_SEED = 0


def perplexity_texts(count: int = PERPLEXITY_TEXTS) -> List[str]:
    """A fixed sample of English fortunes (sorted, shuffled with a fixed seed, the first ``count``)."""
    from benchmarks.text_tasks.setup_data import FORTUNE_DIR
    from benchmarks.text_tasks.tasks import read_fortune_file

    pool = sorted({t for name in PERPLEXITY_FORTUNE_FILES for t in read_fortune_file(FORTUNE_DIR / name)})
    random.Random(f"perplexity/{PERPLEXITY_SEED}").shuffle(pool)
    return pool[:count]
