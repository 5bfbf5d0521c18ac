"""LLM-graded stories: the TinyStories paper's judge (Eldan & Li 2023, section 3, "GPT-Eval").

The paper gives GPT-4 the beginning of a story and a model's completion, separated by `***`, and
asks for a short assessment, then grades for grammar, creativity, consistency with the beginning
and whether the plot makes sense (each 1-10), and a guess of the writer's age group (A: 3 or
under, B: 4-5, C: 6-7, D: 8-9, E: 10-12, F: 13-16). The paper asks in two chat turns with free
text grades; here the same rubric is asked in one turn as a JSON object
(`response_format={"type": "json_object"}`) and every answer is validated: integer scores in 1..10
and one of the six age groups. Chat models often write an unambiguous answer in another form; these
are accepted and the form is recorded (`Grade.normalized`, kept in the cache entry and counted in
`details.normalized`): a score as a string ("7") or out of ten ("7/10"), a whole number written
as a float (7.0), a lower-case letter ("a"), the option as the prompt lists it ("A: 3 or under")
or its text alone ("3 or under"). Anything else is refused: fractional or out-of-range scores,
another denominator ("7/5"), a letter that contradicts its text ("B: 3 or under"), two options.
A refused answer is asked again in the same conversation: the model's answer, then a message
saying exactly what was wrong with it. When the retries run out the story is recorded as failed;
a grade is never guessed from a partial answer.

Stories come from the cell's `samples/generation.jsonl` (the generation eval: prompt, completion,
text) or else `samples/samples.jsonl` (written after training: prompt, sample, text, tokens, where
`text` is the sampled continuation only). The graded part is the `completion` (`text` when there
is no `completion` field); the beginning is what precedes it in the whole story `text` (so a word
model's detokenised prompt reads as in the story), else the `prompt`. An unconditional sample has
an empty beginning, and the judge is told to grade its consistency with itself.

The judge is any OpenAI-compatible chat-completions server (`base_url`: OpenAI, vLLM, ...). The API
key is read from the environment variable named by `api_key_env`; without it the eval is skipped
with the reason stored, so tables show the grades as missing rather than zero. The key is never
written to results, caches or logs (an error message that echoes it is redacted).

Requests use the `openai` client with an explicit `timeout` and its own retries off; this module
retries 408, 409, 429, 5xx, timeouts, connection errors and invalid answers up to `max_retries`
times with exponential backoff (`backoff_base` * 2^attempt, with jitter) or the server's
Retry-After, both capped at `max_wait` seconds. Other client errors (401 bad key, 404 unknown
model, 400) are the user's to fix and stop the eval at once.

Grades are cached in `<cache_dir>/judge/<sha256>.json`, keyed by the judge model, the rubric
version (RUBRIC_VERSION, which names the prompt file `prompts/judge_v<RUBRIC_VERSION>.txt`; bump it
when the prompt changes), the temperature and the full judge message (so the story's beginning and
completion), so a re-run asks nothing again. Only valid grades are cached, in canonical form, with
the normalisation their answer needed under `normalized`.

Metrics: the mean of each score over the graded stories (unit: points on the 1-10 scale, higher is
better) with its standard error in `stderr`, `n_graded` and `n_failed` (stories). `details` holds
the judge model, base URL, temperature, rubric version, age-group counts, token usage of this run
(prompt and completion tokens, as the server reports them) and the first failures with why.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import urlsplit, urlunsplit

from evals.base import EvalContext, EvalResult
from research import cell
from research.checks import ranged
from research.config import build
from research.errors import ConfigError, DataError
from research.io import atomic_write_json

log = logging.getLogger(__name__)

NAME = "judge"
#: 2: unambiguous answer forms are accepted and normalised; a refused answer is asked again with the reason
VERSION = 2
#: the prompt (prompts/judge_v{RUBRIC_VERSION}.txt); it keys the cache, so it changes only with the prompt
RUBRIC_VERSION = 1
SCORES = ("grammar", "creativity", "consistency", "plot")
AGE_GROUPS = {"A": "3 or under", "B": "4-5", "C": "6-7", "D": "8-9", "E": "10-12", "F": "13-16"}
RETRIED_STATUS = (408, 409, 429)  # and every 5xx, as the openai client's own retry policy
MAX_FAILURES_KEPT = 20  # failures listed in details (all are counted in n_failed)


@dataclass
class JudgeOptions:
    model: str = "gpt-4o-mini"  # the paper used GPT-4; any chat model the server knows
    base_url: str | None = None  # None = the openai client's default (OPENAI_BASE_URL or api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    timeout: float = ranged(30.0, gt=0)  # seconds per request (the client's default is 600)
    max_retries: int = ranged(4, ge=0)  # further attempts per story after the first
    backoff_base: float = ranged(1.0, ge=0)  # seconds; the wait before retry k is about backoff_base * 2^k
    max_wait: float = ranged(60.0, ge=0)  # seconds; cap on any single wait, Retry-After included
    temperature: float = ranged(0.0, ge=0, le=2)
    limit: int | None = ranged(None, ge=1)  # grade at most this many stories (file order)
    workers: int = ranged(4, ge=1)  # concurrent requests

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model: name the judge model, e.g. gpt-4o-mini")
        if not self.api_key_env:
            raise ValueError("api_key_env: name the environment variable holding the API key")
        # the numeric fields' ranges are declared on them (ranged) and checked before this


OPTIONS = JudgeOptions  # the eval's `eval.options.judge` keys, checked when the grid loads


@dataclass(frozen=True)
class Story:
    prompt: str  # the prescribed beginning ("" for an unconditional sample)
    completion: str  # the model's continuation, the part graded


@dataclass
class Grade:
    grammar: int
    creativity: int
    consistency: int
    plot: int
    age_group: str
    assessment: str = ""
    #: field -> how an answer that was not in the canonical form was read (empty when none was needed)
    normalized: dict[str, str] = field(default_factory=dict)


@dataclass
class Usage:
    """Token counts as the server reports them, over every request this run made."""

    responses: int = 0  # answers received (timeouts and errors carry no usage)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, usage) -> None:
        with self.lock:
            self.responses += 1
            if usage is not None:
                self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
                self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)

    def to_dict(self) -> dict:
        return {"responses": self.responses, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


class InvalidAnswer(ValueError):
    """The judge's answer is not the JSON object the rubric asks for."""


def prompt_template(version: int = RUBRIC_VERSION) -> Template:
    text = resources.files("evals").joinpath("prompts", f"judge_v{version}.txt").read_text(encoding="utf-8")
    return Template(text)


def judge_message(template: Template, story: Story) -> str:
    return template.substitute(beginning=story.prompt, completion=story.completion)


_SCORE_TEXT = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+)\s*)?$")
_LETTER_TEXT = re.compile(r"^\s*([A-Fa-f])\s*[:.)]\s*(.+?)\s*\.?\s*$")


def _option_text(text: str) -> str:
    """Option text compared loosely: case, spaces and the kind of dash do not matter."""
    return re.sub(r"\s+", " ", text.replace("\u2013", "-").replace("\u2014", "-")).strip().lower()


_AGE_BY_TEXT = {_option_text(t): letter for letter, t in AGE_GROUPS.items()}


def read_score(key: str, value) -> tuple[int, str | None]:
    """A 1-10 score and how it was normalised (None: already an integer)."""
    why = f"{key} must be an integer from 1 to 10, got {value!r}"
    if isinstance(value, bool):
        raise InvalidAnswer(why)
    if isinstance(value, int):
        if not 1 <= value <= 10:
            raise InvalidAnswer(why)
        return value, None
    if isinstance(value, float) and value.is_integer() and 1 <= value <= 10:
        return int(value), f"whole number written as a float ({value!r})"
    if isinstance(value, str):
        m = _SCORE_TEXT.match(value)
        if m and (m.group(2) is None or m.group(2) == "10") and 1 <= int(m.group(1)) <= 10:
            form = "score out of ten" if m.group(2) else "score as a string"
            return int(m.group(1)), f"{form} ({value!r})"
        raise InvalidAnswer(f"{why}: write a bare number such as 7")
    raise InvalidAnswer(why)


def read_age_group(value) -> tuple[str, str | None]:
    """One of the letters A-F and how it was normalised (None: already a capital letter)."""
    choices = "; ".join(f"{k}: {v}" for k, v in AGE_GROUPS.items())
    why = f"age_group must be one of A, B, C, D, E, F ({choices}), got {value!r}"
    if not isinstance(value, str):
        raise InvalidAnswer(why)
    if value in AGE_GROUPS:
        return value, None
    bare = value.strip()
    if bare.upper() in AGE_GROUPS and len(bare) == 1:
        return bare.upper(), f"lower-case letter ({value!r})"
    m = _LETTER_TEXT.match(bare)
    if m:
        letter, text = m.group(1).upper(), _option_text(m.group(2))
        if _AGE_BY_TEXT.get(text) == letter:
            return letter, f"letter with its option text ({value!r})"
        raise InvalidAnswer(f"{why}: the letter {letter} does not go with '{m.group(2)}'; answer with the letter only")
    letter = _AGE_BY_TEXT.get(_option_text(bare.rstrip(".")))
    if letter is not None:
        return letter, f"option text without its letter ({value!r})"
    raise InvalidAnswer(f"{why}: answer with one letter only")


def parse_grade(content: str | None) -> Grade:
    """The grade in a JSON answer, or InvalidAnswer saying what is wrong. Unambiguous non-canonical
    forms are read and recorded in `Grade.normalized`; nothing is guessed."""
    if not content or not content.strip():
        raise InvalidAnswer("empty answer")
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as e:
        raise InvalidAnswer(f"not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict):
        raise InvalidAnswer(f"expected a JSON object, got {type(obj).__name__}")
    scores, normalized = {}, {}
    for key in SCORES:
        if key not in obj:
            raise InvalidAnswer(f"{key} is missing: give it as an integer from 1 to 10")
        scores[key], how = read_score(key, obj[key])
        if how:
            normalized[key] = how
    age, how = read_age_group(obj.get("age_group"))
    if how:
        normalized["age_group"] = how
    assessment = obj.get("assessment", "")
    return Grade(**scores, age_group=age, assessment=assessment if isinstance(assessment, str) else "",
                 normalized=normalized)


def retry_message(reason: str) -> str:
    """What the model is told after an answer that could not be used."""
    return (f"Your answer could not be used: {reason}. Answer again with one JSON object and nothing else, "
            'with exactly the keys "assessment", "grammar", "creativity", "consistency", "plot" (each an '
            'integer from 1 to 10) and "age_group" (one letter, A to F).')


def read_stories(cell_dir: Path) -> tuple[Path, list[Story]]:
    found = cell.sample_files(cell_dir)
    if not found:
        names = " or ".join(cell.relative(cell_dir, cell.samples_path(cell_dir, k)) for k in cell.SAMPLE_KINDS)
        raise DataError(f"{cell_dir}: no {names}; run the generation eval first (or train with eval.samples > 0)")
    path = found[0]
    stories = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        completion = rec.get("completion", rec.get("text")) if isinstance(rec, dict) else None
        if not isinstance(completion, str):
            raise DataError(f"{path}: line {i + 1} is not a JSON object with a 'completion' or 'text' string")
        text = rec.get("text")
        if "completion" in rec and isinstance(text, str) and text.endswith(completion):
            beginning = text[: len(text) - len(completion)]  # the prompt as the story shows it
        else:
            beginning = str(rec.get("prompt") or "")
        stories.append(Story(beginning, completion))
    return path, stories


def cache_key(opts: JudgeOptions, message: str) -> str:
    ident = {"model": opts.model, "rubric_version": RUBRIC_VERSION, "temperature": opts.temperature,
             "message": message}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def public_url(url: str | None) -> str | None:
    """The base URL without any user:password part, safe to store."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def retry_after(error) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms` or `retry-after`: seconds or an HTTP date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class Outcome:
    grade: Grade | None
    attempts: int
    reason: str | None = None
    cached: bool = False


class Judge:
    """One chat-completions client and the retry loop around it."""

    def __init__(self, opts: JudgeOptions, api_key: str):
        import openai

        self.opts = opts
        self.api_key = api_key
        self.usage = Usage()
        self.stop = threading.Event()  # set on an error no retry can fix
        self.client = openai.OpenAI(api_key=api_key, base_url=opts.base_url, timeout=opts.timeout, max_retries=0)

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, "<redacted>") if len(self.api_key) >= 6 else text

    def wait(self, attempt: int, asked: float | None) -> None:
        if asked is not None:
            delay = asked
        else:
            delay = self.opts.backoff_base * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
        self.stop.wait(min(delay, self.opts.max_wait))

    def ask(self, message: str) -> Outcome:
        import openai

        reason, asked = "not asked", None
        messages = [{"role": "user", "content": message}]
        for attempt in range(self.opts.max_retries + 1):
            if self.stop.is_set():
                return Outcome(None, attempt, "stopped after an unrecoverable error")
            if attempt:
                self.wait(attempt, asked)
            asked = None
            try:
                response = self.client.chat.completions.create(
                    model=self.opts.model, messages=messages,
                    temperature=self.opts.temperature, response_format={"type": "json_object"})
            except (json.JSONDecodeError, openai.APIResponseValidationError):
                reason = "invalid answer: the response body is not a chat completion"
                continue
            except openai.APITimeoutError:
                reason = f"timed out after {self.opts.timeout:g} s"
                continue
            except openai.APIConnectionError as e:
                reason = f"connection error ({self.redact(str(e))})"
                continue
            except openai.APIStatusError as e:
                status = e.status_code
                if status in RETRIED_STATUS or status >= 500:
                    reason, asked = f"HTTP {status}", retry_after(e)
                    continue
                self.stop.set()
                hint = {401: f"check ${self.opts.api_key_env}", 403: f"check ${self.opts.api_key_env}",
                        404: f"check eval.options.{NAME}.model / base_url"}.get(status, "see the server's message")
                raise ConfigError(f"{NAME}: the judge server answered HTTP {status} ({hint}): "
                                  f"{(self.redact(str(e.message)).splitlines() or [''])[0][:300]}") from None
            self.usage.add(getattr(response, "usage", None))
            content = None
            try:
                choices = getattr(response, "choices", None)
                if not choices:
                    raise InvalidAnswer("no choices in the response")
                content = choices[0].message.content
                return Outcome(parse_grade(content), attempt + 1)
            except (InvalidAnswer, AttributeError, TypeError) as e:
                reason = f"invalid answer: {e}"
                if isinstance(e, InvalidAnswer) and isinstance(content, str):  # it answered: say what was wrong
                    messages = [messages[0], {"role": "assistant", "content": content},
                                {"role": "user", "content": retry_message(str(e))}]
        return Outcome(None, self.opts.max_retries + 1, f"{reason} (after {self.opts.max_retries + 1} attempts)")


def load_cached(path: Path) -> Grade | None:
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        grade = parse_grade(json.dumps(entry["grade"]))  # stored in canonical form
        grade.normalized = dict(entry.get("normalized") or {})
        return grade
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("judge: ignoring unreadable cache entry %s (%s)", path, e)
        return None


def grade_path(cache: Path, opts: JudgeOptions, message: str) -> Path:
    """Where the grade of one judge message by one judge is cached (read by evals.human too)."""
    return Path(cache) / f"{cache_key(opts, message)}.json"


def grade_stories(judge: Judge, stories: list[Story], template: Template, cache: Path | None) -> list[Outcome]:
    opts = judge.opts

    def one(story: Story) -> Outcome:
        message = judge_message(template, story)
        path = grade_path(cache, opts, message) if cache is not None else None
        cached = load_cached(path) if path is not None else None
        if cached is not None:
            return Outcome(cached, 0, cached=True)
        outcome = judge.ask(message)
        if outcome.grade is not None and path is not None:
            grade = asdict(outcome.grade)
            normalized = grade.pop("normalized")
            atomic_write_json(path, {"judge_model": opts.model, "rubric_version": RUBRIC_VERSION,
                                     "temperature": opts.temperature, "prompt": story.prompt,
                                     "completion": story.completion, "grade": grade,
                                     "normalized": normalized})
        return outcome

    with ThreadPoolExecutor(max_workers=opts.workers) as pool:
        futures = [pool.submit(one, s) for s in stories]
        try:
            return [f.result() for f in futures]
        except BaseException:
            judge.stop.set()  # the others give up at their next attempt
            raise


def normalization_counts(grades: list[Grade]) -> dict[str, int]:
    """How many graded answers needed each kind of normalisation, per field ('age_group: lower-case letter')."""
    counts: dict[str, int] = {}
    for g in grades:
        for key, how in g.normalized.items():
            kind = f"{key}: {how.split(' (', 1)[0]}"
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def mean_stderr(values: list[int]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(JudgeOptions, options or {}, f"eval.options.{NAME}")
    details: dict = {"judge_model": opts.model, "base_url": public_url(opts.base_url) or "openai default",
                     "temperature": opts.temperature, "rubric_version": RUBRIC_VERSION,
                     "prompt_file": f"evals/prompts/judge_v{RUBRIC_VERSION}.txt",
                     "score_unit": "points on the 1-10 scale, higher is better"}
    api_key = os.environ.get(opts.api_key_env, "")
    if not api_key:
        return EvalResult(NAME, VERSION, status="skipped", details=details,
                          reason=f"no API key: ${opts.api_key_env} is not set (export it, or point "
                                 f"eval.options.{NAME}.api_key_env at the variable that holds it)")
    if ctx.cell_dir is None:
        raise ConfigError(f"{NAME}: needs a cell folder with samples (run it with python -m evals.run CELL_DIR)")
    path, stories = read_stories(ctx.cell_dir)
    stories = stories[: opts.limit] if opts.limit is not None else stories
    details["stories_file"] = cell.relative(ctx.cell_dir, path)
    if not stories:
        return EvalResult(NAME, VERSION, status="failed", details=details, reason=f"{path}: no stories to grade")
    cache = Path(ctx.cache_dir) / NAME if ctx.cache_dir is not None else None
    judge = Judge(opts, api_key)
    details["base_url"] = public_url(str(judge.client.base_url).rstrip("/"))  # as resolved (OPENAI_BASE_URL if unset)
    outcomes = grade_stories(judge, stories, prompt_template(), cache)

    graded = [o.grade for o in outcomes if o.grade is not None]
    failures = [{"story": i, "reason": judge.redact(o.reason or "")} for i, o in enumerate(outcomes) if o.grade is None]
    details.update(n_stories=len(stories), n_cached=sum(o.cached for o in outcomes),
                   attempts=sum(o.attempts for o in outcomes), usage=judge.usage.to_dict(),
                   failures=failures[:MAX_FAILURES_KEPT],
                   age_groups={g: sum(x.age_group == g for x in graded) for g in AGE_GROUPS},
                   normalized=normalization_counts(graded))
    if not graded:
        return EvalResult(NAME, VERSION, status="failed", details=details,
                          reason=f"no story could be graded ({len(stories)} failed; first: {failures[0]['reason']})")
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for key in SCORES:
        mean, se = mean_stderr([getattr(g, key) for g in graded])
        metrics[key] = mean
        if se is not None:
            stderr[key] = se
    metrics.update(n_graded=float(len(graded)), n_failed=float(len(failures)))
    if failures:
        log.warning("judge: %d of %d stories could not be graded (first: %s)", len(failures), len(stories),
                    failures[0]["reason"])
    return EvalResult(NAME, VERSION, metrics=metrics, stderr=stderr, n=len(graded), details=details)
