"""Offline rows from our own templates: deterministic, checkable, no Hub rows copied.

Every task family returns a `Task`: the instruction (plus optional input), a correct friendly answer and,
where the family has one, a plausible wrong answer that the DPO generator uses as "rejected".

No generated prompt is one of the course's evaluation prompts (prompts.SFT_PROMPTS), exactly or nearly: the
topics they ask about are left out (EVAL_EXCLUDED_COUNTRIES, EVAL_EXCLUDED_FUNCTIONS, and the summary
family does not use their wording), and every task is checked against them (data.decontamination's measure)
and drawn again if it matches, so that an evaluation prompt added later cannot leak in either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from unsloth_course.data.decontamination import EvalIndex
from unsloth_course.prompts import SFT_PROMPTS


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    output: str
    wrong_output: str | None = None  # a plausible but wrong answer; None when the family has none


NAMES = ("Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Yuki", "Tom", "Nina")
THINGS = ("apples", "marbles", "stickers", "books", "cookies", "pencils", "stamps", "shells")

# ---------------------------------------------------------------- arithmetic (word-phrased)

_OPERATIONS = {
    "+": (lambda a, b: a + b, "plus"),
    "-": (lambda a, b: a - b, "minus"),
    "×": (lambda a, b: a * b, "times"),
}


def _arithmetic_task(rng: random.Random) -> Task:
    symbol = rng.choice(list(_OPERATIONS))
    if symbol == "×":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(10, 99), rng.randint(1, 60)
        if symbol == "-" and b > a:
            a, b = b, a
    compute, word = _OPERATIONS[symbol]
    result = compute(a, b)
    wrong = result + rng.choice((-10, -3, -2, -1, 1, 2, 3, 10))
    name, things = rng.choice(NAMES), rng.choice(THINGS)
    user_input = ""
    story = {
        "+": f"{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?",
        "-": f"{name} had {a} {things} and gave away {b}. How many {things} are left?",
        "×": f"There are {a} boxes with {b} {things} in each box. How many {things} are there in total?",
    }[symbol]
    style = rng.randrange(3)
    if style == 0:
        instruction = f"What is {a} {word} {b}?"
    elif style == 1:
        instruction, user_input = "Calculate the result of the following expression.", f"{a} {symbol} {b}"
    else:
        instruction = story

    def answer(value: int) -> str:
        if style == 2:
            return f"We compute {a} {symbol} {b} = {value}, so the answer is {value} {things}."
        return f"Sure! {a} {word} {b} is {value}, because {a} {symbol} {b} = {value}."

    return Task(instruction, user_input, answer(result), answer(wrong))


# ---------------------------------------------------------------- unit conversion

# (from unit, to unit, convert, a typical mistake, decimals, the rule)
# fmt: off
Conversion = tuple[str, str, Callable[[float], float], Callable[[float], float], int, str]
UNIT_CONVERSIONS: tuple[Conversion, ...] = (
    ("kilometers", "miles", lambda km: km * 0.621371, lambda km: km / 0.621371, 2,
     "1 kilometer is about 0.621371 miles"),
    ("miles", "kilometers", lambda mi: mi * 1.609344, lambda mi: mi / 1.609344, 2,
     "1 mile is 1.609344 kilometers"),
    ("kilograms", "pounds", lambda kg: kg / 0.45359237, lambda kg: kg * 0.45359237, 2,
     "1 pound is 0.45359237 kilograms"),
    ("pounds", "kilograms", lambda lb: lb * 0.45359237, lambda lb: lb / 0.45359237, 2,
     "1 pound is 0.45359237 kilograms"),
    ("degrees Celsius", "degrees Fahrenheit", lambda c: c * 9 / 5 + 32, lambda c: c * 9 / 5, 1,
     "F = C × 9/5 + 32"),
    ("degrees Fahrenheit", "degrees Celsius", lambda f: (f - 32) * 5 / 9, lambda f: f * 5 / 9, 1,
     "C = (F − 32) × 5/9"),
)
# fmt: on


def _unit_task(rng: random.Random) -> Task:
    source, target, convert, mistake, decimals, rule = rng.choice(UNIT_CONVERSIONS)
    value = rng.randint(-20, 45) if source == "degrees Celsius" else rng.randint(1, 250)
    user_input = ""
    style = rng.randrange(3)
    if style == 0:
        instruction = f"Convert {value} {source} to {target}."
    elif style == 1:
        instruction = f"What is {value} {source} in {target}?"
    else:
        instruction, user_input = (
            f"Convert the following value from {source} to {target}.",
            f"{value} {source}",
        )

    def answer(converted: float) -> str:
        return f"{value} {source} is about {converted:.{decimals}f} {target}. (The rule: {rule}.)"

    return Task(instruction, user_input, answer(convert(value)), answer(mistake(value)))


# ---------------------------------------------------------------- string manipulation

# fmt: off
WORDS = (
    "planet", "garden", "window", "rocket", "button", "silver", "forest", "bridge", "candle", "dragon",
    "engine", "family", "guitar", "hammer", "island", "jacket", "kitten", "ladder", "magnet", "napkin",
    "orange", "pencil", "rabbit", "sunset", "ticket", "velvet", "walnut", "yellow", "zipper", "banana",
    "castle", "dinner", "harbor", "insect", "jungle", "lemon", "meadow", "number", "pepper", "river",
    "shadow", "tomato", "violin", "winter", "coffee", "letter", "mirror", "puzzle", "summer", "basket",
)
# fmt: on
VOWELS = "aeiou"


def _string_task(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    kind = rng.choice(("reverse", "vowels", "upper", "sort"))
    if kind == "reverse":
        right, wrong = word[::-1], word[::-1][1:] + word[-1]
        template = 'The word "{word}" reversed is "{value}".'
        if rng.random() < 0.5:
            instruction, user_input = "Reverse the following word.", word
        else:
            instruction, user_input = f'Write the word "{word}" backwards.', ""
        return Task(
            instruction,
            user_input,
            template.format(word=word, value=right),
            template.format(word=word, value=wrong),
        )
    if kind == "vowels":
        found = [c for c in word if c in VOWELS]

        def count_answer(count: int) -> str:
            noun = "vowel" if count == 1 else "vowels"
            return f'The word "{word}" has {count} {noun}: {", ".join(found)}.'

        wrong_count = len(found) + rng.choice((-1, 1))
        return Task(
            f'How many vowels are in the word "{word}"?',
            "",
            count_answer(len(found)),
            count_answer(wrong_count),
        )
    if kind == "upper":
        text = f"{word} {rng.choice(WORDS)}"
        template = 'In uppercase, "{text}" becomes "{value}".'
        return Task(
            "Convert the following text to uppercase.",
            text,
            template.format(text=text, value=text.upper()),
            template.format(text=text, value=text.title()),
        )
    ordered = "".join(sorted(word))
    template = 'Sorted alphabetically, the letters of "{word}" are "{value}".'
    return Task(
        f'Sort the letters of the word "{word}" in alphabetical order.',
        "",
        template.format(word=word, value=ordered),
        template.format(word=word, value=ordered[::-1]),
    )


# ---------------------------------------------------------------- capitals

# fmt: off
COUNTRY_CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern",
    "Poland": "Warsaw", "Sweden": "Stockholm", "Norway": "Oslo", "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Ireland": "Dublin", "Greece": "Athens", "Hungary": "Budapest", "the Czech Republic": "Prague",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "the Philippines": "Manila", "Egypt": "Cairo", "Kenya": "Nairobi", "Nigeria": "Abuja",
    "Ghana": "Accra", "Morocco": "Rabat", "Ethiopia": "Addis Ababa", "Canada": "Ottawa",
    "Mexico": "Mexico City", "Brazil": "Brasília", "Argentina": "Buenos Aires", "Chile": "Santiago",
    "Peru": "Lima", "Australia": "Canberra",
    "New Zealand": "Wellington", "Turkey": "Ankara", "Iran": "Tehran", "Saudi Arabia": "Riyadh",
    "Ukraine": "Kyiv", "the United Kingdom": "London", "Cuba": "Havana",
}
# fmt: on
EVAL_EXCLUDED_COUNTRIES = frozenset({"France"})  # prompts.SFT_PROMPTS asks for its capital
_ASKED_COUNTRIES = [c for c in COUNTRY_CAPITALS if c not in EVAL_EXCLUDED_COUNTRIES]


def _capital_task(rng: random.Random) -> Task:
    country = rng.choice(_ASKED_COUNTRIES)
    wrong_country = rng.choice([c for c in _ASKED_COUNTRIES if c != country])
    user_input = ""
    style = rng.randrange(3)
    if style == 0:
        instruction = f"What is the capital of {country}?"
    elif style == 1:
        instruction = f"Name the capital city of {country}."
    else:
        instruction, user_input = "Tell me the capital of the following country.", country
    sentence = "The capital of {country} is {city}, which is also where its national government sits."
    return Task(
        instruction,
        user_input,
        sentence.format(country=country, city=COUNTRY_CAPITALS[country]),
        sentence.format(country=country, city=COUNTRY_CAPITALS[wrong_country]),
    )


# ---------------------------------------------------------------- small Python functions


@dataclass(frozen=True)
class _CodeTemplate:
    task: str  # completes "Write a Python function that ..."
    function: str
    code: str  # uses {arg} for the parameter name
    explanation: str
    arg_names: tuple[str, ...]
    reference: Callable  # the behaviour the code implements, to state a correct example
    example: Callable[[random.Random], object]


def _random_numbers(rng: random.Random) -> list[int]:
    return [rng.randint(-9, 30) for _ in range(rng.randint(3, 5))]


# fmt: off
CODE_TEMPLATES: tuple[_CodeTemplate, ...] = (
    _CodeTemplate(
        "returns the sum of a list of numbers", "sum_list",
        "def sum_list({arg}):\n    \"\"\"Return the sum of the numbers in a list.\"\"\"\n    total = 0\n"
        "    for number in {arg}:\n        total += number\n    return total",
        "It adds each number to a running total and returns the total.",
        ("numbers", "values", "nums"), sum, _random_numbers,
    ),
    _CodeTemplate(
        "checks whether a number is even", "is_even",
        "def is_even({arg}):\n    \"\"\"Return True if the number is even, otherwise False.\"\"\"\n"
        "    return {arg} % 2 == 0",
        "A number is even when dividing it by 2 leaves no remainder.",
        ("n", "number", "value"), lambda n: n % 2 == 0, lambda rng: rng.randint(0, 99),
    ),
    _CodeTemplate(
        "returns the largest number in a list", "largest",
        "def largest({arg}):\n    \"\"\"Return the largest number in a non-empty list.\"\"\"\n"
        "    best = {arg}[0]\n    for number in {arg}[1:]:\n        if number > best:\n"
        "            best = number\n    return best",
        "It keeps the biggest number seen so far while walking through the list.",
        ("numbers", "values", "nums"), max, _random_numbers,
    ),
    _CodeTemplate(
        "counts the words in a sentence", "count_words",
        "def count_words({arg}):\n    \"\"\"Return how many words the text contains.\"\"\"\n"
        "    return len({arg}.split())",
        "`split()` breaks the text at whitespace, so the length of the result is the number of words.",
        ("text", "sentence"), lambda text: len(text.split()),
        lambda rng: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))),
    ),
    _CodeTemplate(
        "converts a temperature from Celsius to Fahrenheit", "celsius_to_fahrenheit",
        "def celsius_to_fahrenheit({arg}):\n"
        "    \"\"\"Convert a temperature from Celsius to Fahrenheit.\"\"\"\n"
        "    return {arg} * 9 / 5 + 32",
        "It multiplies by 9/5 and adds 32, the standard conversion formula.",
        ("celsius", "degrees"), lambda c: c * 9 / 5 + 32,
        lambda rng: rng.choice((0, 10, 20, 25, 30, 37, 100)),
    ),
    _CodeTemplate(
        "reverses a string", "reverse_string",
        "def reverse_string({arg}):\n    \"\"\"Return the text with its characters in reverse order.\"\"\"\n"
        "    return {arg}[::-1]",
        "The slice `[::-1]` walks through the string from the end to the start.",
        ("text", "word", "s"), lambda s: s[::-1], lambda rng: rng.choice(WORDS),
    ),
    _CodeTemplate(
        "computes the factorial of a non-negative integer", "factorial",
        "def factorial({arg}):\n    \"\"\"Return the factorial of a non-negative integer.\"\"\"\n"
        "    result = 1\n"
        "    for k in range(2, {arg} + 1):\n        result *= k\n    return result",
        "It multiplies together every integer from 2 up to the input; the factorial of 0 and 1 is 1.",
        ("n", "number"), math.factorial, lambda rng: rng.randint(0, 10),
    ),
    _CodeTemplate(
        "counts the vowels in a word", "count_vowels",
        "def count_vowels({arg}):\n"
        "    \"\"\"Return how many of the letters a, e, i, o, u the word contains.\"\"\"\n"
        "    return sum(1 for letter in {arg}.lower() if letter in \"aeiou\")",
        "It checks every letter and counts the ones that are vowels.",
        ("word", "text"), lambda w: sum(1 for c in w.lower() if c in VOWELS), lambda rng: rng.choice(WORDS),
    ),
)
# fmt: on
EVAL_EXCLUDED_FUNCTIONS = frozenset({"factorial"})  # prompts.SFT_PROMPTS asks for it
_WRITTEN_FUNCTIONS = tuple(t for t in CODE_TEMPLATES if t.function not in EVAL_EXCLUDED_FUNCTIONS)


def _code_task(rng: random.Random) -> Task:
    template = rng.choice(_WRITTEN_FUNCTIONS)
    code = template.code.format(arg=rng.choice(template.arg_names))
    example = template.example(rng)
    call = f"{template.function}({example!r})"
    instruction = rng.choice(
        (
            "Write a Python function that {task}.",
            "Can you write a Python function that {task}?",
            "Implement a small Python function that {task}.",
        )
    )
    output = (
        f"Here is a Python function that {template.task}:\n\n```python\n{code}\n```\n\n"
        f"{template.explanation} For example, `{call}` returns `{template.reference(example)!r}`."
    )
    return Task(instruction.format(task=template.task), "", output)


# ---------------------------------------------------------------- summaries of generated paragraphs

# fmt: off
PEOPLE = (("Maria", "she"), ("David", "he"), ("Aisha", "she"), ("Kenji", "he"), ("Elena", "she"),
          ("Marcus", "he"), ("Priya", "she"), ("Jonas", "he"), ("Sofia", "she"), ("Tariq", "he"))
# fmt: on
JOBS = ("baker", "teacher", "nurse", "engineer", "farmer", "painter", "librarian", "bus driver")
PLACES = (
    "a small town by the sea",
    "a busy city",
    "a quiet mountain village",
    "a farming town",
    "a river port",
)
ROUTINES = (
    "walks to work",
    "reads the news over coffee",
    "feeds the neighbour's cat",
    "goes for a short run",
)
# fmt: off
# (what happened, a detail, how it ended, the short version for the summary)
EVENTS = (
    ("entered a local cooking contest with a lemon cake", "The judges praised how light the cake was",
     "is proud of the second prize and plans to compete again",
     "entered a cooking contest and won second prize"),
    ("started a community garden on an empty lot", "Ten neighbours joined in the first week",
     "shares fresh vegetables with the whole street", "started a community garden that now feeds the street"),
    ("organised a charity run for the local hospital", "More than two hundred people took part",
     "has raised enough money for a new ambulance", "organised a charity run that paid for a new ambulance"),
    ("found an old map while cleaning the attic", "The map showed a forgotten path through the woods",
     "has turned the path into a popular hiking trail", "found an old map and reopened a forgotten trail"),
    ("began teaching free evening classes for adults", "Most students wanted to learn basic computer skills",
     "runs three classes a week with a waiting list", "began free evening classes that are now fully booked"),
    ("repaired an old bicycle for a neighbour's child", "Word spread quickly through the neighbourhood",
     "fixes bicycles for free every Saturday",
     "repaired a child's bicycle and now fixes bikes every Saturday"),
)
# fmt: on


def _with_article(noun: str) -> str:
    return f"an {noun}" if noun[0] in VOWELS else f"a {noun}"


def _summary_task(rng: random.Random) -> Task:
    (name, pronoun), job, place = rng.choice(PEOPLE), _with_article(rng.choice(JOBS)), rng.choice(PLACES)
    event, detail, outcome, short = rng.choice(EVENTS)
    paragraph = (
        f"{name} is {job} who lives in {place}. Every morning, {pronoun} {rng.choice(ROUTINES)}. "
        f"Last spring, {pronoun} {event}. {detail}. Today, {pronoun} {outcome}."
    )
    instruction = rng.choice(
        (
            "Sum up this story in a few words.",  # not prompts.SFT_PROMPTS' "Summarize ... in one sentence."
            "Write a one-sentence summary of this text.",
            "Give a short summary of the paragraph below.",
        )
    )
    return Task(instruction, paragraph, f"In short: {name}, {job} from {place}, {short}.")


SFT_FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": _arithmetic_task,
    "unit_conversion": _unit_task,
    "string": _string_task,
    "capital": _capital_task,
    "python_function": _code_task,
    "summary": _summary_task,
}


def _check_count(n: int, where: str) -> None:
    if n < 1:
        raise ValueError(f"{where}: n must be at least 1, got {n}")


@lru_cache(maxsize=1)
def _eval_prompts() -> EvalIndex:
    """The course's evaluation prompts, and the instruction of each that has an input after a blank line."""
    instructions = [p.split("\n\n")[0] for p in SFT_PROMPTS if "\n\n" in p]
    return EvalIndex([*SFT_PROMPTS, *instructions])


def is_eval_prompt(task: Task) -> bool:
    """True when the task's prompt (instruction + input) or its instruction alone duplicates an evaluation
    prompt, exactly or nearly (data.decontamination)."""
    prompt = f"{task.instruction}\n\n{task.input}" if task.input else task.instruction
    return _eval_prompts().match(prompt) is not None or _eval_prompts().match(task.instruction) is not None


def _draw(family: Callable[[random.Random], Task], rng: random.Random) -> Task:
    """A task of `family` that is not an evaluation prompt (drawn again while it is)."""
    for _ in range(100):
        task = family(rng)
        if not is_eval_prompt(task):
            return task
    raise RuntimeError(f"{family.__name__} drew an evaluation prompt 100 times in a row: exclude its topic")


def generate_sft_rows(n: int = 600, seed: int = 3407) -> list[dict]:
    """`n` instruction rows (instruction, input, output), the task families mixed evenly, then shuffled."""
    _check_count(n, "generate_sft_rows")
    rng = random.Random(seed)
    families = list(SFT_FAMILIES.values())
    tasks = [_draw(families[i % len(families)], rng) for i in range(n)]
    rng.shuffle(tasks)
    return [{"instruction": t.instruction, "input": t.input, "output": t.output} for t in tasks]


# ---------------------------------------------------------------- preference pairs

DPO_SYSTEM_PROMPTS = (
    "",
    "You are a helpful assistant.",
    "You are an AI assistant. Give a correct, complete answer so the user does not need to look elsewhere.",
    "You are a patient tutor. Answer clearly and check your work.",
    "",
)
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I don't know.",
    "That is not something I can answer.",
    "You should look that up yourself.",
)


def _rejected_answer(task: Task, rng: random.Random, families: list[Callable[[random.Random], Task]]) -> str:
    """A worse answer: wrong (when the family has one), or a refusal, an off-topic or a truncated reply."""
    kinds = ["refusal", "off_topic", "truncated"] + (["wrong"] * 3 if task.wrong_output else [])
    kind = rng.choice(kinds)
    words = task.output.split(" ")
    if kind == "wrong":
        return task.wrong_output  # type: ignore[return-value]
    if kind == "truncated" and len(words) >= 4:
        return " ".join(words[: max(2, len(words) // 3)])
    if kind == "off_topic":
        other = rng.choice(families)(rng).output
        if other != task.output:
            return other
    return rng.choice(REFUSALS)


def generate_dpo_rows(n: int = 400, seed: int = 3407) -> list[dict]:
    """`n` preference pairs (system, question, chosen, rejected): chosen is correct, rejected is worse."""
    _check_count(n, "generate_dpo_rows")
    rng = random.Random(seed)
    families = list(SFT_FAMILIES.values())
    rows = []
    for i in range(n):
        task = _draw(families[i % len(families)], rng)
        question = f"{task.instruction}\n\n{task.input}" if task.input else task.instruction
        rows.append(
            {
                "system": rng.choice(DPO_SYSTEM_PROMPTS),
                "question": question,
                "chosen": task.output,
                "rejected": _rejected_answer(task, rng, families),
            }
        )
    rng.shuffle(rows)
    return rows
