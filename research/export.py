"""`python -m research.export CELL --format hf`: a cell as a Hugging Face `transformers` model folder.

    python -m research.export results/demo/<cell> --format hf            # writes <cell>/export/hf
    python -m research.export results/demo/<cell> --format hf --out my_model

The folder loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`,
so any tool of that ecosystem (lm-eval's `hf` model, vLLM, the Hub) can read the cell. The export
is checked before it is kept: the written folder is loaded back with `transformers` and its
float32 logits on a batch of token ids are compared with the cell's own (and its tokenizer's ids
with the cell's on a sample text); a mismatch removes nothing and keeps nothing.

Which cells map onto a `transformers` architecture (`HF_ARCHS`, keyed by `model.arch`):

- `gpt` with learned positions, LayerNorm, GELU and plain multi-head attention -> `GPT2LMHeadModel`
  (exact GELU, `activation_function: gelu`; absent biases exported as zeros);
- `gpt` or `llama` with rotary positions, RMSNorm and SwiGLU -> `LlamaForCausalLM` (our rotary
  embedding rotates channel pairs (i, i + d/2), the convention of HF's `rotate_half`, so q/k
  weights are copied unpermuted).

Any other architecture or combination gets a one-line refusal naming what does not map.
Tokenizers: byte-level BPE is exported as is; the character tokenizer as a `WordLevel` model over
single characters (fused on decoding); the word tokenizer is refused (its splitting rule has no
`tokenizers` equivalent).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from research.errors import UserError, run_main
from research.tokenizers.base import EOT, UNK


class ExportError(UserError):
    pass


def refuse(cfg, why: str) -> ExportError:
    return ExportError(f"model.arch {cfg.arch}: cannot export to transformers: {why}")


def require(what: str):
    try:
        return __import__(what)
    except ImportError:
        raise UserError(f"{what} is not installed; install the extra: pip install -e '.[hf]'") from None


# -- model weights ---------------------------------------------------------------------------------


def gpt2_export(model, vocab_size: int):
    """(transformers config, state dict) of a GPT-2 layout cell."""
    from transformers import GPT2Config

    cfg = model.cfg
    if cfg.pos != "learned" or cfg.norm != "layernorm" or cfg.mlp != "gelu":
        raise refuse(cfg, f"GPT-2 needs pos: learned, norm: layernorm, mlp: gelu (got {cfg.pos}, {cfg.norm}, "
                          f"{cfg.mlp}); rope + rmsnorm + swiglu exports as Llama")
    if (cfg.n_kv_head or cfg.n_head) != cfg.n_head:
        raise refuse(cfg, "GPT-2 has no grouped-query attention (n_kv_head)")
    hf_cfg = GPT2Config(vocab_size=vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, n_inner=cfg.ff_width, activation_function="gelu",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None)
    sd = {}

    def linear(prefix: str, *layers: torch.nn.Linear) -> None:  # HF GPT-2 uses Conv1D: weight is (in, out)
        sd[f"{prefix}.weight"] = torch.cat([layer.weight.detach() for layer in layers]).T.contiguous()
        sd[f"{prefix}.bias"] = torch.cat([layer.bias.detach() if layer.bias is not None
                                          else torch.zeros(layer.out_features) for layer in layers])

    def norm(prefix: str, layer: torch.nn.LayerNorm) -> None:
        sd[f"{prefix}.weight"] = layer.weight.detach()
        sd[f"{prefix}.bias"] = layer.bias.detach() if layer.bias is not None else torch.zeros_like(layer.weight)

    sd["transformer.wte.weight"] = model.tok_emb.weight.detach()
    sd["transformer.wpe.weight"] = model.pos_emb.weight.detach()
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}"
        norm(f"{p}.ln_1", block.norm1)
        linear(f"{p}.attn.c_attn", block.attn.q, block.attn.kv)  # HF stacks q, k, v; our kv holds k, then v
        linear(f"{p}.attn.c_proj", block.attn.proj)
        norm(f"{p}.ln_2", block.norm2)
        linear(f"{p}.mlp.c_fc", block.mlp.up)
        linear(f"{p}.mlp.c_proj", block.mlp.down)
    norm("transformer.ln_f", model.norm_f)
    sd["lm_head.weight"] = model.lm_head.weight.detach()
    return hf_cfg, sd


def llama_export(model, vocab_size: int):
    """(transformers config, state dict) of a Llama layout cell (rope, RMSNorm, SwiGLU)."""
    from transformers import LlamaConfig

    cfg = model.cfg
    if cfg.pos != "rope" or cfg.norm != "rmsnorm" or cfg.mlp != "swiglu":
        raise refuse(cfg, f"Llama needs pos: rope, norm: rmsnorm, mlp: swiglu (got {cfg.pos}, {cfg.norm}, {cfg.mlp})")
    hidden = cfg.ff_width
    n_kv = cfg.n_kv_head or cfg.n_head
    hd = cfg.n_embd // cfg.n_head
    hf_cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.n_embd, intermediate_size=hidden,
                         num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=n_kv,
                         head_dim=hd, max_position_embeddings=cfg.block_size, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_base)},
                         attention_bias=cfg.bias, mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings,
                         bos_token_id=None, eos_token_id=None)
    sd = {"model.embed_tokens.weight": model.tok_emb.weight.detach()}

    def put(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        sd[f"{name}.weight"] = weight.detach().contiguous()
        if bias is not None:
            sd[f"{name}.bias"] = bias.detach().contiguous()

    def parts(layer: torch.nn.Linear, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        ws = layer.weight.split(sizes, dim=0)
        bs = layer.bias.split(sizes, dim=0) if layer.bias is not None else [None] * len(sizes)
        return list(zip(ws, bs))

    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}"
        sd[f"{p}.input_layernorm.weight"] = block.norm1.weight.detach()
        sd[f"{p}.post_attention_layernorm.weight"] = block.norm2.weight.detach()
        (q,) = parts(block.attn.q, [cfg.n_head * hd])
        k, v = parts(block.attn.kv, [n_kv * hd, n_kv * hd])
        put(f"{p}.self_attn.q_proj", *q)
        put(f"{p}.self_attn.k_proj", *k)
        put(f"{p}.self_attn.v_proj", *v)
        put(f"{p}.self_attn.o_proj", block.attn.proj.weight, block.attn.proj.bias)
        gate, up = parts(block.mlp.up, [hidden, hidden])  # ours: silu(first half) * second half
        put(f"{p}.mlp.gate_proj", *gate)
        put(f"{p}.mlp.up_proj", *up)
        put(f"{p}.mlp.down_proj", block.mlp.down.weight, block.mlp.down.bias)
    sd["model.norm.weight"] = model.norm_f.weight.detach()
    sd["lm_head.weight"] = model.lm_head.weight.detach()
    return hf_cfg, sd


def gpt_export(model, vocab_size: int):
    return (llama_export if model.cfg.pos == "rope" else gpt2_export)(model, vocab_size)


#: model.arch -> function (model, vocab size) -> (transformers config, state dict)
HF_ARCHS: dict[str, Callable] = {"gpt": gpt_export, "llama": llama_export}


# -- tokenizer -------------------------------------------------------------------------------------


def char_backend(tok):
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.WordLevel(vocab=dict(tok.stoi), unk_token=UNK))
    if tok.lowercase:
        hf.normalizer = normalizers.Lowercase()
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf


#: tokenizer.kind -> function (our tokenizer) -> a `tokenizers.Tokenizer` giving the same ids
HF_TOKENIZERS: dict[str, Callable] = {"bpe": lambda tok: type(tok.hf).from_str(tok.hf.to_str()), "char": char_backend}


def hf_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    if tok.kind not in HF_TOKENIZERS:
        raise ExportError(f"tokenizer.kind {tok.kind}: cannot export to transformers (exportable: "
                          f"{', '.join(HF_TOKENIZERS)})")
    backend = HF_TOKENIZERS[tok.kind](tok)
    backend.add_special_tokens([EOT])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                   unk_token=UNK if tok.kind == "char" else None)


# -- export and check ------------------------------------------------------------------------------

#: text the export check tokenizes with both tokenizers
CHECK_TEXT = "The quick brown fox jumps over the lazy dog. Robert said: \"it's 42!\"\nA new line, and émigré."


def check_export(folder: Path, model, tok, n_rows: int = 4, seed: int = 0) -> dict:
    """Load `folder` with transformers; compare float32 logits on random ids and tokenizer ids on a text.

    Returns the largest absolute logit difference; raises ExportError past 1e-4 (float32 rounding
    of two implementations of the same function is orders of magnitude below that).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(folder)
    T = min(model.block_size, 64)
    ids = torch.randint(0, tok.vocab_size, (n_rows, T), generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    with torch.no_grad():
        ours = model.float()(ids.to(device)).float().cpu()
        theirs = hf_model(ids).logits.float()
    gap = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    ids_ours = list(tok.encode(CHECK_TEXT))
    ids_hf = hf_tok(CHECK_TEXT, add_special_tokens=False)["input_ids"]
    if ids_ours != ids_hf:
        raise ExportError(f"{folder}: the exported tokenizer gives other ids than the cell's on a sample text")
    if not gap <= 1e-4 * max(1.0, scale):
        raise ExportError(f"{folder}: exported logits differ from the cell's by up to {gap:.3g}")
    return {"max_abs_logit_diff": gap, "max_abs_logit": scale, "rows": n_rows, "tokens_per_row": T}


def export_hf(model, tok, out: Path) -> dict:
    """Write `out` (a transformers model folder with tokenizer), checked; returns the check's numbers."""
    require("transformers")
    arch = model.cfg.arch
    if arch not in HF_ARCHS:
        raise ExportError(f"model.arch {arch}: no transformers architecture maps onto it "
                          f"(exportable: {', '.join(HF_ARCHS)})")
    hf_cfg, state = HF_ARCHS[arch](model, tok.vocab_size)
    hf_tokenizer_obj = hf_tokenizer(tok)
    hf_cfg.bos_token_id = hf_cfg.eos_token_id = tok.eot_id
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32)
    missing, unexpected = hf_model.load_state_dict({k: v.float().cpu() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not (hf_cfg.tie_word_embeddings and k == "lm_head.weight")
               and not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
    if missing or unexpected:
        raise ExportError(f"model.arch {arch}: weights do not map (missing {missing[:3]}, unexpected {unexpected[:3]})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf_model.save_pretrained(tmp)
        hf_tokenizer_obj.save_pretrained(tmp)
        check = check_export(tmp, model, tok)
        (tmp / "export_check.json").write_text(json.dumps(check, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # the folder appears whole, or not at all
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return check


#: --format -> exporter (model, tokenizer, out folder) -> check numbers
FORMATS: dict[str, Callable] = {"hf": export_hf}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m research.export", description=__doc__.splitlines()[0])
    p.add_argument("cell_dir", type=Path, help="a finished cell folder, results/<grid>/<cell>")
    p.add_argument("--format", choices=sorted(FORMATS), default="hf")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <cell>/export/<format>)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from research.checkpoint import load_cell

    args = parse_args(argv)
    cell = load_cell(args.cell_dir)
    out = args.out or Path(args.cell_dir) / "export" / args.format
    check = FORMATS[args.format](cell.model, cell.tokenizer, out)
    print(f"wrote {out}: transformers logits match the cell's within {check['max_abs_logit_diff']:.2e} "
          f"(float32, {check['rows']} x {check['tokens_per_row']} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
