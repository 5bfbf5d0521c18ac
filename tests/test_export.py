"""`research.export`: gpt/llama cells as transformers folders, loaded back with transformers itself."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from research.checkpoint import save_weights
from research.config import RunConfig, TokenizerConfig
from research.errors import run_main
from research.models import build_model
from research.models.gpt import GPT, GPTConfig
from research.models.llama import Llama, LlamaConfig
from research.models.rnn import LSTM
from research.tokenizers import train_tokenizer
from research.tokenizers.bpe import BPETokenizer
from research.tokenizers.char import CharTokenizer
from research.tokenizers.word import WordTokenizer

transformers = pytest.importorskip("transformers")
from research.export import CHECK_TEXT, ExportError, check_export, export_hf, main  # noqa: E402

DOCS = ["The cat sat on the mat.", "Robert said: \"it's 42!\"\nA new line, and émigré.", "the quick brown fox " * 5]


def perturbed(model):
    """Random norms and biases, so a weight mapped to the wrong place cannot hide behind ones and zeros."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_exported_folder_gives_the_cells_logits_and_token_ids(tmp_path, kind):
    if kind == "gpt2":  # learned positions, biases, untied head; byte-level BPE
        tok = BPETokenizer.train(TokenizerConfig(kind="bpe", vocab_size=300), DOCS)
        model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, bias=True, tie_embeddings=False),
                    tok.vocab_size)
    else:  # rope, RMSNorm, SwiGLU, grouped-query attention; characters
        tok = CharTokenizer.train(TokenizerConfig(kind="char"), DOCS)
        model = Llama(LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=24), tok.vocab_size)
    model = perturbed(model)
    check = export_hf(model, tok, tmp_path / "hf")
    assert check["max_abs_logit_diff"] <= 1e-5 * max(1.0, check["max_abs_logit"])
    assert json.loads((tmp_path / "hf" / "export_check.json").read_text()) == check
    # loaded back here, independently of the export's own check, on other ids
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[kind]
    ids = torch.randint(0, tok.vocab_size, (3, 24), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, model(ids), atol=1e-5, rtol=0)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in DOCS + [CHECK_TEXT]:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        assert hf_tok.decode(tok.encode(text)) == tok.decode(tok.encode(text))
    assert hf_tok.eos_token_id == tok.eot_id == hf.config.eos_token_id


def test_the_check_catches_weights_that_do_not_match(tmp_path):
    tok = CharTokenizer.train(TokenizerConfig(kind="char"), DOCS)
    torch.manual_seed(0)
    model = GPT(GPT.tiny_config(), tok.vocab_size).eval()
    export_hf(model, tok, tmp_path / "hf")
    with pytest.raises(ExportError, match="logits differ"):
        check_export(tmp_path / "hf", perturbed(GPT(GPT.tiny_config(), tok.vocab_size)), tok)


def test_architectures_and_tokenizers_that_do_not_map_are_refused_in_one_line(tmp_path):
    tok = CharTokenizer.train(TokenizerConfig(kind="char"), DOCS)
    cases = [
        (LSTM(LSTM.tiny_config(), tok.vocab_size), tok, "model.arch lstm: no transformers architecture maps"),
        (GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, pos="rope"), tok.vocab_size), tok,
         "Llama needs pos: rope, norm: rmsnorm, mlp: swiglu"),
        (GPT(GPTConfig(n_layer=1, n_head=2, n_kv_head=1, n_embd=16, block_size=8), tok.vocab_size), tok,
         "GPT-2 has no grouped-query attention"),
        (GPT(GPT.tiny_config(), 50), WordTokenizer.train(TokenizerConfig(kind="word"), DOCS),
         "tokenizer.kind word: cannot export"),
    ]
    for model, t, message in cases:
        with pytest.raises(ExportError, match=message) as err:
            export_hf(model, t, tmp_path / "out")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def stored_cell(root, arch: str):
    cfg = RunConfig.from_dict({"data": {"source": "builtin", "n_docs": 40}, "tokenizer": {"kind": "char"},
                               "model": {"arch": arch, "n_layer": 1, "n_embd": 16} | (
                                   {"n_head": 2, "block_size": 16} if arch == "llama" else {})})
    from research.data import load_corpus

    tok = train_tokenizer(cfg.tokenizer, load_corpus(cfg.data).train)
    torch.manual_seed(0)
    cell_dir = root / arch
    cell_dir.mkdir(parents=True)
    (cell_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    tok.save(cell_dir / "tokenizer")
    save_weights(build_model(cfg.model, tok.vocab_size), cell_dir)
    return cell_dir


def test_cli_writes_into_the_cell_and_refuses_in_one_line(tmp_path, capsys):
    cell = stored_cell(tmp_path, "llama")
    assert main([str(cell), "--format", "hf"]) == 0
    assert (cell / "export" / "hf" / "config.json").exists()
    assert "transformers logits match" in capsys.readouterr().out
    rnn = stored_cell(tmp_path, "gru")
    assert run_main(main, [str(rnn), "--format", "hf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.arch gru: no transformers architecture") and err.count("\n") == 1
