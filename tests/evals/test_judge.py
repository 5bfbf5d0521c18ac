"""The LLM judge against a real local chat-completions server: parsing, retries, cache, key handling."""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch

from evals.base import EvalContext
from evals.judge import Story, evaluate, judge_message, parse_grade, prompt_template, public_url, read_stories
from evals.run import main, run_evals
from research.errors import ConfigError, DataError
from tests.evals.judge_server import JudgeServer, Reply, garbage, grade_json, ok, rate_limited, server_error, slow
from tests.helpers import store_untrained_cell

KEY = "sk-test-DO-NOT-LEAK-0123456789"
FAST = {"backoff_base": 0.01, "max_wait": 0.5, "timeout": 5.0, "workers": 1}


def write_stories(cell_dir, records, name="samples.jsonl"):
    folder = cell_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in records))


STORIES = [
    {"prompt": "Once upon a time", "sample": 0, "text": " there was a cat named Tom.", "tokens": 7},
    {"prompt": "Once upon a time", "sample": 1, "text": " a dog found a big red ball.", "tokens": 8},
]


@pytest.fixture
def cell(tmp_path, monkeypatch):
    """A cell folder with two stored stories, the API key in the environment, a shared cache folder."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cell_dir = tmp_path / "grid" / "cell"
    write_stories(cell_dir, STORIES)
    return EvalContext(model=None, tokenizer=None, config=None, cell_dir=cell_dir, cache_dir=tmp_path / "_cache")


def by_story(body: dict) -> Reply:
    """Grammar 9 for the cat story, 6 for the dog story: known means and spread."""
    text = body["messages"][0]["content"]
    return ok(grammar=9, plot=4) if "cat named Tom" in text else ok(grammar=6, plot=8)


def options(server, **extra):
    return {"base_url": server.base_url, **FAST, **extra}


def files_containing(root, needle: str) -> list:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.parametrize("content, why", [
    ("", "empty"),
    ("Grammar: 8/10", "not JSON"),
    ("[1, 2]", "JSON object"),
    (grade_json(grammar="7.5"), "grammar must be an integer"),
    (grade_json(grammar="7/5"), "grammar must be an integer"),
    (grade_json(grammar="11/10"), "grammar must be an integer"),
    (grade_json(grammar="seven"), "grammar must be an integer"),
    (grade_json(creativity=7.5), "creativity must be an integer"),
    (grade_json(consistency=True), "consistency must be an integer"),
    (grade_json(plot=0), "plot must be an integer from 1 to 10"),
    (grade_json(grammar=11), "grammar must be an integer from 1 to 10"),
    (json.dumps({"grammar": 5, "creativity": 5, "consistency": 5, "age_group": "A"}), "plot"),
    (grade_json(age_group="G"), "age_group must be one of A, B, C, D, E, F"),
    (grade_json(age_group="B: 3 or under"), "the letter B does not go with '3 or under'"),
    (grade_json(age_group="A or B"), "age_group must be one of"),
    (grade_json(age_group="4"), "age_group must be one of"),
    (grade_json(age_group="G: 17-20"), "age_group must be one of"),
    (grade_json(age_group=1), "age_group must be one of"),
])
def test_parse_grade_rejects_anything_but_the_rubric(content, why):
    with pytest.raises(ValueError, match=why):
        parse_grade(content)


@pytest.mark.parametrize("field, value, read, how", [
    ("age_group", "A", "A", None),
    ("age_group", "a", "A", "lower-case letter"),
    ("age_group", "A: 3 or under", "A", "letter with its option text"),
    ("age_group", "d) 8–9", "D", "letter with its option text"),
    ("age_group", "3 or under", "A", "option text without its letter"),
    ("age_group", "10-12", "E", "option text without its letter"),
    ("grammar", 7, 7, None),
    ("grammar", "7", 7, "score as a string"),
    ("grammar", "7/10", 7, "score out of ten"),
    ("grammar", " 10 / 10 ", 10, "score out of ten"),
    ("grammar", 7.0, 7, "whole number written as a float"),
])
def test_parse_grade_accepts_unambiguous_forms_and_says_how_it_read_them(field, value, read, how):
    g = parse_grade(grade_json(**{field: value}))
    assert getattr(g, field) == read
    assert g.normalized == ({field: f"{how} ({value!r})"} if how else {})


def test_parse_grade_reads_the_rubric():
    g = parse_grade(grade_json(grammar=10, creativity=1, consistency=7, plot=3, age_group="F"))
    assert (g.grammar, g.creativity, g.consistency, g.plot, g.age_group) == (10, 1, 7, 3, "F")
    assert g.assessment == "Mostly fine."


def test_prompt_marks_the_beginning_and_asks_for_the_paper_rubric():
    msg = judge_message(prompt_template(), Story("Once upon a time", " there was a $5 cat."))
    assert "Once upon a time*** there was a $5 cat." in msg
    for word in ("grammar", "creativity", "consistency", "plot", "A: 3 or under", "F: 13-16", "JSON"):
        assert word in msg


def test_valid_answers_give_means_stderr_usage_and_the_request_is_as_configured(cell):
    with JudgeServer(default=by_story) as server:
        result = evaluate(cell, options(server, model="judge-x", temperature=0.5))
    assert result.status == "ok" and result.n == 2
    assert result.metrics["grammar"] == pytest.approx(7.5)
    assert result.metrics["plot"] == pytest.approx(6.0)
    assert result.metrics["creativity"] == pytest.approx(6.0)
    assert result.stderr["grammar"] == pytest.approx(1.5)  # sd of (9, 6) over sqrt(2)
    assert result.stderr["creativity"] == 0.0
    assert (result.metrics["n_graded"], result.metrics["n_failed"]) == (2, 0)
    d = result.details
    assert d["usage"] == {"responses": 2, "prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}
    assert (d["judge_model"], d["temperature"], d["rubric_version"]) == ("judge-x", 0.5, 1)
    assert d["normalized"] == {}
    assert d["base_url"] == server.base_url and d["age_groups"]["C"] == 2
    body = server.requests[0]
    assert body["model"] == "judge-x" and body["temperature"] == 0.5
    assert body["response_format"] == {"type": "json_object"}
    assert "Once upon a time*** there was a cat named Tom." in body["messages"][0]["content"]
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"


def test_limit_grades_only_the_first_stories(cell):
    with JudgeServer() as server:
        result = evaluate(cell, options(server, limit=1))
    assert result.n == 1 and len(server.requests) == 1 and result.details["n_stories"] == 1


@pytest.mark.parametrize("reply", [rate_limited("0.4"), Reply(status=429, headers={"retry-after-ms": "400"})],
                         ids=["retry-after", "retry-after-ms"])
def test_429_is_retried_after_the_servers_retry_after(cell, reply):
    with JudgeServer([reply]) as server:
        started = time.perf_counter()
        result = evaluate(cell, options(server, max_wait=5.0, limit=1))
        elapsed = time.perf_counter() - started
    assert result.status == "ok" and result.metrics["grammar"] == 8
    assert len(server.requests) == 2 and result.details["attempts"] == 2
    assert elapsed >= 0.4  # honoured, not the 0.01 s backoff


def test_retry_after_is_capped_by_max_wait(cell):
    with JudgeServer([rate_limited("3600")]) as server:
        started = time.perf_counter()
        result = evaluate(cell, options(server, max_wait=0.05, limit=1))
    assert result.status == "ok" and len(server.requests) == 2
    assert time.perf_counter() - started < 3


def test_server_errors_are_retried_then_recorded_as_failed(cell):
    with JudgeServer(default=server_error(500)) as server:
        result = evaluate(cell, options(server, max_retries=2))
    assert len(server.requests) == 6  # 2 stories x (1 + 2 retries)
    assert result.status == "failed" and result.metrics == {}
    assert "HTTP 500 (after 3 attempts)" in result.reason
    assert [f["story"] for f in result.details["failures"]] == [0, 1]


def test_a_timeout_is_retried(cell):
    with JudgeServer([slow(3.0)]) as server:
        started = time.perf_counter()
        result = evaluate(cell, options(server, timeout=0.3, limit=1))
    assert result.status == "ok" and len(server.requests) == 2
    assert time.perf_counter() - started < 2.5


def test_timeouts_every_time_fail_with_the_reason(cell):
    with JudgeServer(default=slow(3.0)) as server:
        result = evaluate(cell, options(server, timeout=0.2, max_retries=1, limit=1))
    assert result.status == "failed" and "timed out after 0.2 s (after 2 attempts)" in result.reason
    assert len(server.requests) == 2


def test_a_garbled_answer_is_asked_again(cell):
    with JudgeServer([garbage()]) as server:
        result = evaluate(cell, options(server, limit=1))
    assert result.status == "ok" and len(server.requests) == 2 and result.metrics["grammar"] == 8


def test_an_answer_in_the_prompts_own_option_form_is_graded_at_once_and_the_form_cached(cell):
    """A server that answers as chat models often do: the option as listed, the score out of ten."""
    with JudgeServer(default=ok(age_group="A: 3 or under", grammar="7/10")) as server:
        result = evaluate(cell, options(server))
    assert result.status == "ok" and result.n == 2 and len(server.requests) == 2  # no retry
    assert result.metrics["grammar"] == 7 and result.details["age_groups"]["A"] == 2
    assert result.details["normalized"] == {"age_group: letter with its option text": 2,
                                            "grammar: score out of ten": 2}
    entry = json.loads(next((cell.cache_dir / "judge").glob("*.json")).read_text())
    assert entry["grade"]["age_group"] == "A" and entry["grade"]["grammar"] == 7  # canonical
    assert entry["normalized"] == {"age_group": "letter with its option text ('A: 3 or under')",
                                   "grammar": "score out of ten ('7/10')"}
    with JudgeServer() as server:  # read back from the cache with its normalisation
        again = evaluate(cell, options(server))
    assert len(server.requests) == 0 and again.details["normalized"] == result.details["normalized"]


def test_the_retry_tells_the_model_exactly_what_was_wrong(cell):
    refused = grade_json(age_group="B: 3 or under")
    with JudgeServer([Reply(content=refused)]) as server:
        result = evaluate(cell, options(server, limit=1))
    assert result.status == "ok" and len(server.requests) == 2
    first, second = server.requests[0]["messages"], server.requests[1]["messages"]
    assert len(first) == 1 and second[0] == first[0]
    assert second[1] == {"role": "assistant", "content": refused}
    assert second[2]["role"] == "user"
    assert "age_group must be one of A, B, C, D, E, F" in second[2]["content"]
    assert "got 'B: 3 or under'" in second[2]["content"]
    assert "the letter B does not go with '3 or under'" in second[2]["content"]


@pytest.mark.parametrize("reply", [
    Reply(raw="<html>502 Bad Gateway</html>"),  # 200, says JSON, is not
    Reply(raw='{"id": "x", "choices": []}'),
    Reply(content=None),
], ids=["not-json-body", "no-choices", "null-content"])
def test_a_malformed_response_is_asked_again(cell, reply):
    with JudgeServer([reply]) as server:
        result = evaluate(cell, options(server, limit=1))
    assert result.status == "ok" and len(server.requests) == 2 and result.details["attempts"] == 2


def test_garbled_and_out_of_range_answers_fail_and_are_never_guessed(cell):
    write_stories(cell.cell_dir, [{"prompt": "", "text": "good"}, {"prompt": "", "text": "garbled"},
                                  {"prompt": "", "text": "too high"}])

    def answer(body):
        text = body["messages"][0]["content"]
        if "***garbled" in text:
            return garbage('{"grammar": 8, "creativity": 6,')  # cut off mid-object
        if "***too high" in text:
            return ok(grammar=11)
        return ok(grammar=9)

    with JudgeServer(default=answer) as server:
        result = evaluate(cell, options(server, max_retries=2))
    assert len(server.requests) == 1 + 3 + 3
    assert result.status == "ok" and result.n == 1
    assert result.metrics["grammar"] == 9.0 and "grammar" not in result.stderr  # only the valid grade counts
    assert (result.metrics["n_graded"], result.metrics["n_failed"]) == (1, 2)
    reasons = {f["story"]: f["reason"] for f in result.details["failures"]}
    assert reasons[1].startswith("invalid answer: not JSON") and "after 3 attempts" in reasons[1]
    assert "grammar must be an integer from 1 to 10, got 11" in reasons[2]
    assert result.details["usage"]["responses"] == 7  # failed answers still cost tokens


def test_cached_grades_make_no_request(cell):
    with JudgeServer(default=by_story) as server:
        first = evaluate(cell, options(server))
        assert len(server.requests) == 2
        again = evaluate(cell, options(server))
        assert len(server.requests) == 2  # nothing asked
        assert again.metrics == first.metrics and again.details["n_cached"] == 2
        assert again.details["usage"]["responses"] == 0
        other = evaluate(cell, options(server, model="another-judge"))
        assert len(server.requests) == 4 and other.details["n_cached"] == 0  # the judge model is in the key
    entries = sorted((cell.cache_dir / "judge").glob("*.json"))
    assert len(entries) == 4
    stored = json.loads(entries[0].read_text())
    assert stored["rubric_version"] == 1 and set(stored["grade"]) >= {"grammar", "plot", "age_group"}


def test_failed_grades_are_not_cached(cell):
    with JudgeServer([server_error(503)]) as server:
        first = evaluate(cell, options(server, max_retries=0, limit=1))
        second = evaluate(cell, options(server, max_retries=0, limit=1))
    assert first.status == "failed" and second.status == "ok" and len(server.requests) == 2


def test_no_api_key_skips_with_the_reason_stored(cell, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with JudgeServer() as server:
        (result,) = run_evals(cell, ["judge"], {"judge": options(server)})
    assert result.status == "skipped" and "$OPENAI_API_KEY is not set" in result.reason
    assert server.requests == []
    stored = json.loads((cell.cell_dir / "evals" / "judge.json").read_text())
    assert stored["status"] == "skipped" and stored["metrics"] == {} and "OPENAI_API_KEY" in stored["reason"]


def test_the_key_env_var_is_configurable(cell, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("MY_JUDGE_KEY", "another-key-42")
    with JudgeServer() as server:
        result = evaluate(cell, options(server, api_key_env="MY_JUDGE_KEY", limit=1))
    assert result.status == "ok" and server.headers[0]["authorization"] == "Bearer another-key-42"


def test_a_rejected_key_stops_at_once_and_is_never_written_or_logged(cell, caplog):
    for name in (None, "openai", "httpx2", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=name)
    echo = Reply(status=401, error=f"Incorrect API key provided: {KEY}. You can find your API key at ...")
    with JudgeServer(default=echo) as server:
        (result,) = run_evals(cell, ["judge"], {"judge": options(server)})
    assert len(server.requests) == 1  # no retry, no second story
    assert result.status == "failed" and "HTTP 401" in result.reason and "<redacted>" in result.reason
    with JudgeServer() as server:
        (result,) = run_evals(cell, ["judge"], {"judge": options(server)})
    assert result.status == "ok" and server.headers[0]["authorization"] == f"Bearer {KEY}"
    written = [p for p in cell.cell_dir.parent.parent.rglob("*") if p.is_file()]
    assert len(written) >= 4  # stories, result, two cache entries
    assert files_containing(cell.cell_dir.parent.parent, KEY) == []
    assert "HTTP Request: POST" in caplog.text and KEY not in caplog.text


def test_an_unknown_model_is_a_config_error_naming_the_option(cell):
    with JudgeServer(default=Reply(status=404, error="model 'nope' does not exist")) as server:
        with pytest.raises(ConfigError, match=r"HTTP 404 \(check eval.options.judge.model"):
            evaluate(cell, options(server, model="nope"))


def test_credentials_in_the_base_url_are_not_stored():
    assert public_url("https://user:secret@judge.example/v1") == "https://judge.example/v1"
    assert public_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_options_are_checked(cell):
    with pytest.raises(ConfigError, match="eval.options.judge.modle: unknown key; did you mean 'model'"):
        evaluate(cell, {"modle": "x"})
    with pytest.raises(ConfigError, match="eval.options.judge.timeout: must be positive, got 0"):
        evaluate(cell, {"timeout": 0})


def test_stories_come_from_the_generation_eval_when_present(tmp_path):
    with pytest.raises(DataError, match="no samples/generation.jsonl or samples/samples.jsonl"):
        read_stories(tmp_path)
    write_stories(tmp_path, STORIES)
    assert read_stories(tmp_path)[1][0] == Story("Once upon a time", " there was a cat named Tom.")
    write_stories(tmp_path, [{"prompt": "Tom", "completion": " ran.", "text": "Tom ran."},
                             {"prompt": "tom ran", "completion": " home.", "text": "Tom ran home."},
                             {"prompt": "", "completion": "", "text": ""}], "generation.jsonl")
    path, stories = read_stories(tmp_path)
    assert path.name == "generation.jsonl"
    # the beginning as the story shows it (a word model's detokenised prompt), then the completion
    assert stories == [Story("Tom", " ran."), Story("Tom ran", " home."), Story("", "")]
    (tmp_path / "samples" / "generation.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(DataError, match="line 1 is not a JSON object with a 'completion' or 'text'"):
        read_stories(tmp_path)


def test_cli_grades_a_stored_cell(tmp_path, monkeypatch, capsys):
    from research.generate import generate

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cell_dir, model, tok, _ = store_untrained_cell(tmp_path, {
        "data": {"source": "builtin", "n_docs": 40}, "tokenizer": {"kind": "char"},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32}})
    prompt = "Once upon a time"  # stories as the trainer's samples.jsonl stores them (ablations.train_cell)
    gen = torch.Generator().manual_seed(0)
    outs = [generate(model, tok.encode(prompt), 12, tok.eot_id, 1.0, None, None, gen) for _ in range(3)]
    write_stories(cell_dir, [{"prompt": prompt, "sample": i, "text": tok.decode(out), "tokens": len(out)}
                             for i, out in enumerate(outs)])

    with JudgeServer() as server:
        rc = main([str(cell_dir), "--evals", "judge", "--device", "cpu",
                   "--set", f"eval.options.judge.base_url={server.base_url}",
                   "--set", "eval.options.judge.backoff_base=0.01", "--set", "eval.options.judge.model=local-judge"])
    assert rc == 0 and "judge: ok" in capsys.readouterr().out
    assert len(server.requests) == 3
    stored = json.loads((cell_dir / "evals" / "judge.json").read_text())
    assert stored["status"] == "ok" and stored["n"] == 3 and stored["metrics"]["grammar"] == 8
    assert stored["details"]["judge_model"] == "local-judge"
    assert len(list((tmp_path / "_cache" / "judge").glob("*.json"))) == 3  # <results>/_cache, beside the grid
    assert files_containing(tmp_path, KEY) == []
