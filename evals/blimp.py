"""BLiMP (Warstadt et al. 2020, TACL 8): 67 paradigms x 1,000 minimal pairs of English grammar.

Matches lm-evaluation-harness 0.4.13's `blimp` group (67 `blimp_<paradigm>` tasks, task version
1.0, group version 2.0; `lm_eval/tasks/blimp/_template_yaml`) pair for pair:

- each sentence is the continuation `" " + sentence` of an empty context (the template's
  `doc_to_text` is "" and its target delimiter a space), so it is scored after the end-of-text
  token with a leading space: with a byte-level BPE, "Robert" is then scored as `ĠRober|t`, as in
  running text, not as `R|ober|t`;
- a pair is right when `argmax(logp(good), logp(bad))` is the good sentence, so a tie counts as
  right (numpy's argmax takes the first). The release has 7 pairs whose two sentences are
  identical (`passive_1` pairIDs 324 and 810; `principle_A_case_2` 105, 287, 372, 816 and 967):
  every model ties on them and gets them right; their count is in `details["ties"]`.

Reported (all lm-eval's definition):

- `acc`: the mean of the paradigm accuracies (lm-eval's group aggregate, `weight_by_size: false`;
  also the paper's "overall" figure: GPT-2 0.830, LSTM 0.698, Transformer-XL 0.696, 5-gram 0.612);
- `acc/field/<field>`: mean over the paradigms of each field (morphology, syntax,
  syntax_semantics, semantics; the one file spelling it `syntax/semantics` is folded in);
- `acc/phenomenon/<linguistics_term>`: mean over the paradigms of each of the 13 terms;
- `acc/<paradigm>`: each paradigm (lm-eval's `blimp_<paradigm>` acc).

`stderr["acc"]` is the binomial standard error over all pairs scored.

With `doc_start: true` it also reports `acc_doc_start` (mean over paradigms), a scoring of our
own and no peer's: each sentence scored as a training document starts, right after end-of-text
with no leading space, and a tie counted as half right (the expected score of breaking it at
random). It was `acc` up to version 1 of this eval.

Data: HF `nyu-mll/blimp` (one config per paradigm, split `train`) by default, or `path`: a folder
of `<paradigm>.jsonl[.gz]` files as in the authors' repository (`data/`), or one JSON Lines file;
paradigms are read from each line's `UID`. `paradigms` picks some, `limit` scores a seeded random
sample of N pairs per paradigm.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from evals.base import EvalContext, EvalResult
from evals.scoring import binomial_stderr, load_hf, local_path, read_jsonl, seeded_subset, sentence_logprobs
from research.checks import ranged
from research.config import build
from research.errors import ConfigError, DataError

NAME = "blimp"
VERSION = 2
HF_DATASET = "nyu-mll/blimp"

#: the 67 paradigms, as file names in alexwarstadt/blimp `data/` (and HF config names)
PARADIGMS = (
    "adjunct_island anaphor_gender_agreement anaphor_number_agreement animate_subject_passive animate_subject_trans "
    "causative complex_NP_island coordinate_structure_constraint_complex_left_branch "
    "coordinate_structure_constraint_object_extraction determiner_noun_agreement_1 determiner_noun_agreement_2 "
    "determiner_noun_agreement_irregular_1 determiner_noun_agreement_irregular_2 determiner_noun_agreement_with_adj_2 "
    "determiner_noun_agreement_with_adj_irregular_1 determiner_noun_agreement_with_adj_irregular_2 "
    "determiner_noun_agreement_with_adjective_1 distractor_agreement_relational_noun "
    "distractor_agreement_relative_clause drop_argument ellipsis_n_bar_1 ellipsis_n_bar_2 "
    "existential_there_object_raising existential_there_quantifiers_1 existential_there_quantifiers_2 "
    "existential_there_subject_raising expletive_it_object_raising inchoative intransitive "
    "irregular_past_participle_adjectives irregular_past_participle_verbs irregular_plural_subject_verb_agreement_1 "
    "irregular_plural_subject_verb_agreement_2 left_branch_island_echo_question left_branch_island_simple_question "
    "matrix_question_npi_licensor_present npi_present_1 npi_present_2 only_npi_licensor_present only_npi_scope "
    "passive_1 passive_2 principle_A_c_command principle_A_case_1 principle_A_case_2 principle_A_domain_1 "
    "principle_A_domain_2 principle_A_domain_3 principle_A_reconstruction regular_plural_subject_verb_agreement_1 "
    "regular_plural_subject_verb_agreement_2 sentential_negation_npi_licensor_present sentential_negation_npi_scope "
    "sentential_subject_island superlative_quantifiers_1 superlative_quantifiers_2 tough_vs_raising_1 "
    "tough_vs_raising_2 transitive wh_island wh_questions_object_gap wh_questions_subject_gap "
    "wh_questions_subject_gap_long_distance wh_vs_that_no_gap wh_vs_that_no_gap_long_distance wh_vs_that_with_gap "
    "wh_vs_that_with_gap_long_distance"
).split()


@dataclass
class BlimpOptions:
    path: str | None = None  # folder of <paradigm>.jsonl[.gz] or one JSONL file; None = HF nyu-mll/blimp
    paradigms: list[str] | None = None  # None = all 67
    limit: int | None = ranged(None, ge=1)  # seeded random sample of N pairs per paradigm
    seed: int = 0
    batch_size: int = ranged(64, ge=1)
    doc_start: bool = False  # also report acc_doc_start (no leading space, ties half; version 1's acc)


OPTIONS = BlimpOptions  # the eval's `eval.options.blimp` keys, checked when the grid loads


def load_pairs(opts: BlimpOptions) -> dict[str, list[dict]]:
    """Paradigm -> its pairs (dicts with sentence_good, sentence_bad, field, linguistics_term, UID)."""
    wanted = opts.paradigms
    if wanted is not None:
        unknown = [p for p in wanted if p not in PARADIGMS]
        if unknown:
            raise ConfigError(f"eval.options.{NAME}.paradigms: unknown {', '.join(unknown)}; see evals.blimp.PARADIGMS")
    if opts.path is None:
        return {p: list(load_hf(NAME, HF_DATASET, p, split="train")) for p in (wanted or PARADIGMS)}
    root = local_path(NAME, opts.path)
    files = [root] if root.is_file() else sorted(root.glob("*.jsonl")) + sorted(root.glob("*.jsonl.gz"))
    by_paradigm: dict[str, list[dict]] = defaultdict(list)
    for f in files:
        stem = f.name.split(".")[0]
        if root.is_dir() and (stem not in PARADIGMS or (wanted is not None and stem not in wanted)):
            continue  # other files in the folder (models_summary.jsonl) or paradigms not asked for
        for i, row in enumerate(read_jsonl(f)):
            if "sentence_good" not in row or "sentence_bad" not in row:
                raise DataError(f"{f}: line {i + 1} is not a BLiMP pair (needs sentence_good, sentence_bad)")
            uid = row.get("UID", stem)
            if wanted is None or uid in wanted:
                by_paradigm[uid].append(row)
    if not by_paradigm:
        raise DataError(f"eval.options.{NAME}.path: no BLiMP pairs found in {root}")
    return dict(sorted(by_paradigm.items()))


def pair_logprobs(model, tokenizer, pairs: list[dict], leading_space: bool = True, batch_size: int = 64,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities (nats) of each pair's good and bad sentence, read after end-of-text.

    leading_space=True scores `" " + sentence` (lm-eval's request); False scores the sentence as
    a document starts.
    """
    prefix = " " if leading_space else ""
    sentences = [prefix + p["sentence_good"] for p in pairs] + [prefix + p["sentence_bad"] for p in pairs]
    scores = sentence_logprobs(model, tokenizer, sentences, batch_size, device)
    good = np.array([s.logprob for s in scores[: len(pairs)]])
    bad = np.array([s.logprob for s in scores[len(pairs):]])
    return good, bad


def pair_scores(model, tokenizer, pairs: list[dict], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """lm-eval's per-pair acc: 1 where the good sentence is at least as likely as the bad one, else 0."""
    good, bad = pair_logprobs(model, tokenizer, pairs, True, batch_size, device)
    return (good >= bad).astype(np.float64)


def doc_start_scores(model, tokenizer, pairs: list[dict], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """acc_doc_start per pair: no leading space; 1 where good is more likely, 0 where less, 0.5 on a tie."""
    good, bad = pair_logprobs(model, tokenizer, pairs, False, batch_size, device)
    return np.where(good > bad, 1.0, np.where(good == bad, 0.5, 0.0))


def paradigm_mean(owner: list[str], scores: np.ndarray) -> dict[str, float]:
    per_paradigm: dict[str, list[float]] = defaultdict(list)
    for paradigm, s in zip(owner, scores):
        per_paradigm[paradigm].append(float(s))
    return {p: float(np.mean(v)) for p, v in per_paradigm.items()}


def field_of(row: dict) -> str:
    return row.get("field", "unknown").replace("/", "_")


def evaluate(ctx: EvalContext, options: dict) -> EvalResult:
    opts = build(BlimpOptions, options or {}, f"eval.options.{NAME}")
    data = load_pairs(opts)
    flat, owner = [], []
    for paradigm, rows in data.items():
        for i in seeded_subset(len(rows), opts.limit, opts.seed):
            flat.append(rows[i])
            owner.append(paradigm)
    good, bad = pair_logprobs(ctx.model, ctx.tokenizer, flat, True, opts.batch_size, ctx.device)
    scored = (good >= bad).astype(np.float64)
    acc = paradigm_mean(owner, scored)
    first = {p: data[p][0] for p in acc}
    metrics = {"acc": float(np.mean(list(acc.values())))}
    for key, group_of in (("field", field_of), ("phenomenon", lambda r: r.get("linguistics_term", "unknown"))):
        groups: dict[str, list[float]] = defaultdict(list)
        for p, a in acc.items():
            groups[group_of(first[p])].append(a)
        metrics.update({f"acc/{key}/{g}": float(np.mean(v)) for g, v in sorted(groups.items())})
    metrics.update({f"acc/{p}": a for p, a in acc.items()})
    if opts.doc_start:
        doc_start = doc_start_scores(ctx.model, ctx.tokenizer, flat, opts.batch_size, ctx.device)
        by_paradigm = paradigm_mean(owner, doc_start)
        metrics["acc_doc_start"] = float(np.mean(list(by_paradigm.values())))
    n = len(scored)
    details = {
        "paradigms": len(acc),
        "pairs_per_paradigm": opts.limit,
        "ties": int(np.sum(good == bad)),
        "tie_rule": "argmax over (good, bad): a tie counts as right (lm-eval)",
        "matches": "lm-evaluation-harness 0.4.13 blimp (tasks v1.0, group v2.0)",
        "acc_pairs": float(np.mean(scored)) if n else float("nan"),  # pooled over pairs, not paradigms
        "source": opts.path or f"hf:{HF_DATASET}",
    }
    return EvalResult(NAME, VERSION, metrics=metrics, stderr={"acc": binomial_stderr(float(np.mean(scored)), n)},
                      n=n, details=details)
