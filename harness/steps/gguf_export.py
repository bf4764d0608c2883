"""The `export_gguf` step: an hf Llama-family checkpoint written as one GGUF file that llama.cpp runs.

This does what llama.cpp's convert_hf_to_gguf.py does for LlamaForCausalLM with a byte-level BPE
tokenizer, through gguf-py's GGUFWriter, so that a recipe needs no llama.cpp source tree:

- Weights keep their values: F32 (the default) is a pure conversion; F16/BF16 round every matrix,
  while 1-D tensors and norms stay F32 as llama.cpp's converter keeps them (its kernels expect that).
  Tied embeddings write no output.weight: llama.cpp then reuses token_embd for the output.
- attn_q and attn_k are permuted. HF checkpoints lay each head's rotary dimensions out as two halves
  (rotate_half); llama.cpp's RoPE rotates interleaved pairs, and its converter reorders the rows of
  q (by n_head) and k (by n_head_kv) to match. transformers undoes that when it loads a GGUF, so
  skipping it here would give a file that loads fine and scores garbage.
- The tokenizer: every id in order (tokenizer.json's vocab and added tokens), control types for
  special added tokens, BPE merges, bos/eos/unk/pad ids, the add_bos flag the tokenizer really has,
  and the chat template (gguf.SpecialVocab reads merges, special ids and template). llama.cpp picks
  its pre-tokenizer regex by `tokenizer.ggml.pre`; `pre=auto` identifies it as the converter does,
  by the hash of the tokenizer's ids for llama.cpp's check text (SmolLM2, including the checkpoint
  dequantised from the embedded GGUF, hashes to "smollm", what the embedded GGUF carries).

Checkpoints this cannot write faithfully (other architectures, rope scaling, biases, sentencepiece
tokenizers, unknown pre-tokenizers) are refused by `check`, before any step of the recipe runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.core.errors import UsageError
from harness.steps.base import Step, StepOutput, unknown_keys
from harness.store.artifacts import GGUF_FILE, Artifact

KIND = "export_gguf"
# dtype -> (llama_ftype written as general.file_type, GGML type of the matrices)
DTYPES: dict[str, tuple[int, str]] = {"F32": (0, "F32"), "F16": (1, "F16"), "BF16": (32, "BF16")}
LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
AUTO = "auto"
# llama.cpp's convert_hf_to_gguf.py (get_vocab_base_pre, llama-cpp-python 0.3.36's vendored copy):
# the tokenizer's ids for this text, hashed, name the pre-tokenizer. Only llama-family entries.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
    "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # mistralai/Mistral-Nemo-Base-2407
}
PRE_NAMES = tuple(sorted(set(KNOWN_PRE.values())))
PARAMS = {
    "dtype": f"{' | '.join(DTYPES)} (default F32): precision of the matrices; norms stay F32",
    "pre": f"llama.cpp pre-tokenizer: auto (default: identified from the tokenizer) | {' | '.join(PRE_NAMES)}",
}


class ExportGGUF(Step):
    kind = KIND
    accepts = ("hf",)
    libraries = ("torch", "gguf", "safetensors", "tokenizers")

    def check(self, params: Mapping[str, Any], model_dir: Path) -> dict:
        unknown_keys(KIND, params, PARAMS)
        dtype = str(params.get("dtype", "F32")).upper()
        if dtype not in DTYPES:
            raise UsageError(f"step {KIND}: dtype {params.get('dtype')!r} is not one of {', '.join(DTYPES)}")
        pre = str(params.get("pre", AUTO))
        if pre != AUTO and pre not in PRE_NAMES:
            raise UsageError(f"step {KIND}: pre {pre!r} is not one of auto, {', '.join(PRE_NAMES)}")
        check_checkpoint(Path(model_dir))
        return {"dtype": dtype, "pre": detect_pre(Path(model_dir)) if pre == AUTO else pre}

    def run(self, parent: Artifact, params: Mapping[str, Any], seed: int, out: Path) -> StepOutput:
        model_dir = Path(parent.model_path)
        config = check_checkpoint(model_dir)
        dtype = str(params.get("dtype", "F32")).upper()
        pre = str(params.get("pre", AUTO))
        types, nbytes, parameters = write_gguf(model_dir, config, dtype, detect_pre(model_dir) if pre == AUTO else pre,
                                               out / GGUF_FILE)
        return StepOutput(format="gguf", relation="converted" if dtype == "F32" else "quantized", parameters=parameters,
                          bits_per_weight=8 * nbytes / parameters, metadata={"dtype": dtype, "tensor_types": types})


# -- what the checkpoint is -----------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"step {KIND}: cannot read {path}: {error}") from None


def rope(config: Mapping[str, Any]) -> tuple[float, str]:
    """(rope theta, rope type) from a transformers 5 `rope_parameters` or an older `rope_theta`/`rope_scaling`."""
    parameters = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or {})
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    return float(theta), str(kind)


def check_checkpoint(model_dir: Path) -> dict:
    """config.json of a checkpoint this exporter writes faithfully; UsageError naming what it cannot."""
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"step {KIND}: {model_dir} has no config.json: it takes an hf checkpoint directory")
    config = _read_json(model_dir / "config.json")
    architectures = config.get("architectures") or [config.get("model_type", "?")]
    if not set(architectures) & set(LLAMA_ARCHITECTURES):
        raise UsageError(f"step {KIND}: architecture {', '.join(map(str, architectures))} is not supported; "
                         f"it writes {', '.join(LLAMA_ARCHITECTURES)} checkpoints")
    if (kind := rope(config)[1]) != "default":
        raise UsageError(f"step {KIND}: rope scaling {kind!r} is not supported (only plain RoPE)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UsageError(f"step {KIND}: attention or mlp biases are not supported")
    if not _weight_files(model_dir):
        raise UsageError(f"step {KIND}: {model_dir} has no *.safetensors weights")
    tokenizer = _read_json(model_dir / "tokenizer.json") if (model_dir / "tokenizer.json").is_file() else {}
    if tokenizer.get("model", {}).get("type") != "BPE" or '"ByteLevel"' not in json.dumps(tokenizer.get("pre_tokenizer")):
        raise UsageError(f"step {KIND}: {model_dir} needs a byte-level BPE tokenizer.json (GPT-2 style); "
                         "sentencepiece tokenizers are not supported")
    return config


def detect_pre(model_dir: Path) -> str:
    """llama.cpp's pre-tokenizer name for the tokenizer, as convert_hf_to_gguf.py finds it."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(CHECK_TEXT).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest not in KNOWN_PRE:
        raise UsageError(f"step {KIND}: the tokenizer's pre-tokenizer is not one it knows (check hash {digest[:16]}); "
                         f"set pre to one of {', '.join(PRE_NAMES)} if you know it matches")
    return KNOWN_PRE[digest]


# -- the tokenizer --------------------------------------------------------------------------------


def _looks_special(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>")  # as the converter: <|im_start|> is control


def vocabulary(tokenizer: Mapping[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token text (byte-level form, as the GGUF stores it) and its gguf.TokenType."""
    from gguf import TokenType

    by_id: dict[int, tuple[str, int]] = {i: (t, TokenType.NORMAL) for t, i in tokenizer["model"]["vocab"].items()}
    for added in tokenizer.get("added_tokens", []):
        special = added.get("special") or _looks_special(added["content"])
        by_id[int(added["id"])] = (added["content"], TokenType.CONTROL if special else TokenType.USER_DEFINED)
    if by_id and max(by_id) >= vocab_size:
        raise UsageError(f"step {KIND}: token id {max(by_id)} is past the model's vocab_size {vocab_size}")
    entries = [by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED)) for i in range(vocab_size)]
    return [t for t, _ in entries], [int(k) for _, k in entries]


def _adds_bos(model_dir: Path, bos_id: int | None) -> bool:
    """Whether the tokenizer itself puts bos in front (its post-processor), which llama.cpp then repeats."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    plain, full = tokenizer.encode("a", add_special_tokens=False).ids, tokenizer.encode("a").ids
    return bos_id is not None and len(full) > len(plain) and full[0] == bos_id


def add_tokenizer(writer: Any, model_dir: Path, vocab_size: int, pre: str) -> None:
    import gguf

    tokens, types = vocabulary(_read_json(model_dir / "tokenizer.json"), vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    config = _read_json(model_dir / "tokenizer_config.json") if (model_dir / "tokenizer_config.json").is_file() else {}
    if isinstance(config.get("add_prefix_space"), bool):
        writer.add_add_space_prefix(config["add_prefix_space"])
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    special.add_special_token["bos"] = _adds_bos(model_dir, special.special_token_ids.get("bos"))
    special.add_to_gguf(writer, quiet=True)


# -- the weights ----------------------------------------------------------------------------------


def _weight_files(model_dir: Path) -> list[Path]:
    return sorted(model_dir.glob("*.safetensors"))


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def permute(weights: Any, n_head: int) -> Any:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows from rotate_half order to interleaved pairs."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def hf_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """(name, torch tensor) of every weight, in layer order."""
    from safetensors import safe_open

    handles = [safe_open(str(path), framework="pt") for path in _weight_files(model_dir)]
    located = {name: handle for handle in handles for name in handle.keys()}
    for name in sorted(located, key=_natural):
        yield name, located[name].get_tensor(name)


def gguf_tensors(model_dir: Path, config: Mapping[str, Any], dtype: str) -> Iterator[tuple[str, Any, Any]]:
    """(gguf name, numpy data, GGML type) of every tensor llama.cpp reads."""
    import gguf
    import numpy as np
    import torch

    n_head, n_layer = int(config["num_attention_heads"]), int(config["num_hidden_layers"])
    n_head_kv = int(config.get("num_key_value_heads") or n_head)
    tied = bool(config.get("tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    matrix_type = gguf.GGMLQuantizationType[DTYPES[dtype][1]]
    for hf_name, tensor in hf_tensors(model_dir):
        if hf_name.endswith(".rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the same matrix as token_embd
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UsageError(f"step {KIND}: tensor {hf_name} has no llama.cpp name")
        if hf_name.endswith("q_proj.weight"):
            tensor = permute(tensor, n_head)
        elif hf_name.endswith("k_proj.weight"):
            tensor = permute(tensor, n_head_kv)
        data = tensor.to(torch.float32).contiguous().numpy()
        if data.ndim <= 1 or name.endswith("_norm.weight") or matrix_type == gguf.GGMLQuantizationType.F32:
            yield name, data, gguf.GGMLQuantizationType.F32
        elif matrix_type == gguf.GGMLQuantizationType.F16:
            yield name, data.astype(np.float16), matrix_type
        else:
            yield name, gguf.quants.quantize(data, matrix_type), matrix_type


def add_hparams(writer: Any, config: Mapping[str, Any], dtype: str) -> None:
    n_head = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_head)
    name = config.get("_name_or_path") or config.get("_model_name_or_path") or "model"
    writer.add_name(Path(str(name)).name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(rope(config)[0])
    writer.add_rope_dimension_count(head_dim)
    if head_dim * n_head != int(config["hidden_size"]):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(DTYPES[dtype][0])


def write_gguf(model_dir: Path, config: Mapping[str, Any], dtype: str, pre: str, path: Path) -> tuple[dict[str, int], int, int]:
    """Writes the GGUF; returns ({GGML type: tensor count}, bytes of tensor data, number of weights)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    add_hparams(writer, config, dtype)
    add_tokenizer(writer, model_dir, int(config["vocab_size"]), pre)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    types: dict[str, int] = {}
    nbytes = parameters = 0
    for name, data, qtype in gguf_tensors(model_dir, config, dtype):
        writer.add_tensor(name, data, raw_dtype=qtype)
        types[qtype.name] = types.get(qtype.name, 0) + 1
        block, size = gguf.GGML_QUANT_SIZES[qtype]  # weights per block, bytes per block
        nbytes += data.nbytes
        parameters += data.nbytes // size * block
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dict(sorted(types.items())), nbytes, parameters
