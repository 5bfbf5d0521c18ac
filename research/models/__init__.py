"""The model registry: a name in `model.arch` -> a `LanguageModel` subclass with a `Config`.

Adding a model is one file in this folder and one line here.
"""

from __future__ import annotations

from research.registry import Registry

MODELS = Registry(
    "model",
    {
        "gpt": "research.models.gpt:GPT",
        "llama": "research.models.llama:Llama",
        "transformer": "research.models.transformer_classic:Transformer",
        "rnn": "research.models.rnn:RNN",
        "gru": "research.models.rnn:GRU",
        "lstm": "research.models.rnn:LSTM",
        "rnn_attention": "research.models.rnn_attention:RNNAttention",
        "ngram": "research.models.ngram:NGram",
        "windowed": "research.models.windowed:WindowedGPT",
        "tapered": "research.models.tapered:TaperedGPT",
        "shared": "research.models.weight_sharing:SharedGPT",
        "residual_root": "research.models.residual_root:ResidualRootGPT",
        "shared_windowed": "research.models.combined:SharedWindowedGPT",
        "tapered_windowed": "research.models.combined:TaperedWindowedGPT",
        "residual_root_windowed": "research.models.combined:ResidualRootWindowedGPT",
        "attention_scaling": "research.models.attention_scaling:AttentionScalingGPT",
        "attention_scaling_windowed": "research.models.combined:AttentionScalingWindowedGPT",
    },
)


def build_model(cfg, vocab_size: int):
    """Instantiate the registered model for `cfg.arch` over a vocabulary of `vocab_size`.

    With `match_params` set, the width is first sized to the budget (research.sizing); the model's
    `cfg` is then the resolved config (chosen n_embd / d_ff, match_params cleared) for the record.
    """
    model_cls = MODELS.get(cfg.arch, key="model.arch")
    if getattr(cfg, "match_params", None) is not None:
        from research.sizing import match_params

        cfg = match_params(model_cls, cfg, vocab_size)
    return model_cls(cfg, vocab_size)
