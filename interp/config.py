"""Run configuration: one frozen dataclass per concern, validated in one place.

A run is described by `RunConfig(world, model, train)`. Every field carries a one-line help text
(`field(metadata={"help": ...})`) that the CLI shows in `--help` and that `describe()` prints.
Configs are built from presets (`PRESETS`), JSON files and `--set key=value` overrides, and all
three paths go through `from_dict`, which rejects unknown keys and wrong types with one line that
names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.errors import UserError

# The training objectives (`train.objective`), in the kit's display order. The registry of their
# implementations, `interp.objectives.OBJECTIVES`, checks at import that it has exactly these.
OBJECTIVE_NAMES = (
    "causal",
    "reverse_entity",
    "reverse_token",
    "bico",
    "mlm",
    "mlm_u",
    "mlm_u_hybrid",
)


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic world of people and their facts (or the paper's published data)."""

    source: str = _f(
        "synthetic",
        "where the facts come from: 'synthetic' (A is B), 'paper' (Exp. 1 data), 'biography' "
        "(people with several attributes, interp.data.biography), 'retrieval' (random "
        "key-value pairs, interp.data.retrieval) or 'bridge' (pairs of people linked by a "
        "relation and its inverse, Ma et al.'s identity bridge, interp.data.bridge)",
    )
    data_dir: str = _f(
        "",
        "the paper's Exp. 1 data (source='paper' only): a version folder, or a clone of "
        "lukasberglund/reversal_curse",
    )
    data_version: str = _f(
        "june_version_7921032488",
        "version folder under data/reverse_experiments/ when data_dir is the paper's repository",
    )
    seed: int = _f(0, "seed of the world generator (people, names, descriptions, templates)")
    n_people_per_subset: int = _f(
        100, "people in each of the N2D, D2N and Both subsets (the bridge world: pairs)"
    )
    n_train_templates: int = _f(4, "training paraphrase templates per direction (max 8)")
    n_heldout_templates: int = _f(3, "held-out paraphrase templates per direction (max 4)")
    n_first_names: int = _f(24, "size of the invented first-name pool")
    n_last_names: int = _f(40, "size of the invented last-name pool")
    n_first_name_classes: int = _f(4, "classes of first names: the attribute held only in A")
    n_roles: int = _f(8, "roles ('composer', ...): the attribute held only in B, max 12")
    n_title_words: int = _f(30, "invented words that make work titles")
    title_length: int = _f(2, "words in a work title (B's multi-token tail)")
    n_new_people: int = _f(20, "held-out people never trained on (the gradient-update test)")
    n_attribute_values: int = _f(8, "biography world: values of each of city, year, employer")
    bio_multiplicity: int = _f(1, "biography world: distinct biographies per person")
    bio_permute: int = _f(0, "biography world: 1 shuffles each biography's sentence order")
    bio_fullname: int = _f(0, "biography world: 1 repeats the full name in every sentence")
    bridge: str = _f(
        "",
        "the bridge world's training set (world.source=bridge, Ma et al. 2026, "
        "interp.data.bridge): 'forward' (the forward fact only), 'ocr' (the forward fact "
        "through the relation x6, the OCR bridge and B's self-identity) or 'idn' (the forward "
        "fact x6 and both naive self-identities)",
    )


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the small GPT, in TransformerLens's vocabulary."""

    n_layers: int = _f(4, "transformer blocks")
    d_model: int = _f(64, "width of the residual stream")
    n_heads: int = _f(4, "attention heads per block")
    d_head: int = _f(0, "width of one head; 0 means d_model // n_heads")
    d_mlp: int = _f(256, "hidden width of each MLP")
    n_ctx: int = _f(24, "longest sequence the model accepts, in tokens")
    act_fn: str = _f("gelu", "MLP activation: gelu, gelu_new, relu or silu")
    normalization: str = _f("LN", "normalisation: LN, LNPre, RMS or RMSPre")
    positional_embedding: str = _f("standard", "positions: 'standard' (learned) or 'rotary'")
    query_layers: int = _f(
        0,
        "0: one stack (the kit's GPT); N > 0: Kitouni et al.'s two-stream encoder-decoder, "
        "n_layers content blocks and N query blocks (interp.encoder_decoder; mlm and mlm_u only)",
    )

    @property
    def resolved_d_head(self) -> int:
        return self.d_head or self.d_model // self.n_heads


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: AdamW with linear warm-up and cosine decay."""

    objective: str = _f("causal", "training objective (see interp.objectives.OBJECTIVES)")
    seed: int = _f(0, "seed of initialisation, data order and any masking")
    steps: int = _f(800, "optimiser steps")
    batch_size: int = _f(64, "documents per batch")
    lr: float = _f(3e-3, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of the peak")
    warmup_steps: int = _f(100, "steps of linear warm-up")
    weight_decay: float = _f(0.1, "AdamW weight decay (matters for reversal: Kim et al. 2025)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 disables)")
    eval_every: int = _f(400, "evaluate exact match every N steps (0 disables)")
    checkpoint_every: int = _f(200, "write a checkpoint every N steps (0 disables)")
    device: str = _f("cpu", "torch device: cpu, cuda or auto")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a trained run. Its hash names the run in a study cache."""

    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self, hashed: bool = False) -> dict[str, Any]:
        """The config as a dict; with `hashed`, as its hash reads it: fields added since runs
        were first named (`ADDED_FIELDS`) left out while they hold their default, so adding a
        field renames no existing run."""
        d = dataclasses.asdict(self)
        if hashed:
            for (section, name), default in ADDED_FIELDS.items():
                if d[section].get(name) == default:
                    d[section].pop(name)
        return d

    def hash(self) -> str:
        """Stable short hash of the config (device excluded: it does not change the science)."""
        d = self.to_dict(hashed=True)
        d["train"] = {k: v for k, v in d["train"].items() if k != "device"}
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# Fields added after runs were first named by their hash, with the default that leaves them out.
ADDED_FIELDS: dict[tuple[str, str], Any] = {("model", "query_layers"): 0}


SECTIONS: dict[str, type] = {"world": WorldConfig, "model": ModelConfig, "train": TrainConfig}

ACT_FNS = ("gelu", "gelu_new", "relu", "silu")
NORMALIZATIONS = ("LN", "LNPre", "RMS", "RMSPre")
POSITIONALS = ("standard", "rotary")
# The objectives that read each masked token at its own position, masks never attended: the
# only ones the encoder-decoder (model.query_layers > 0) can train.
ENCODER_DECODER_OBJECTIVES = ("mlm", "mlm_u")


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert a JSON value or a `--set` string to the field's type, or raise a one-line error."""
    name = f"{section}.{f.name}"
    typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str}[f.type]
    if isinstance(value, str) and typ is not str:
        try:
            value = typ(value) if typ is int else float(value)
        except ValueError:
            tname = typ.__name__
            raise UserError(f"{name} must be {tname}, got {value!r}: pass e.g. {name}=1") from None
        if typ is float and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}: pass e.g. {name}=0.1")
        return value
    if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"{name} must be an int, got {value!r}: pass a whole number")
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{name} must be a number, got {value!r}: pass e.g. {name}=0.1")
        if not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}: pass e.g. {name}=0.1")
        return float(value)
    if typ is str and not isinstance(value, str):
        raise UserError(f"{name} must be a string, got {value!r}: quote it")
    return value


def _find_key(key: str) -> tuple[str, str]:
    """Resolve 'section.field' or an unambiguous bare 'field' to (section, field)."""
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise UserError(
                f"unknown config section {section!r} in {key!r}: use one of {list(SECTIONS)}"
            )
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if name not in names:
            raise UserError(f"unknown config key {key!r}: {section} has {', '.join(names)}")
        return section, name
    hits = [s for s, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(hits) == 1:
        return hits[0], key
    if len(hits) > 1:
        raise UserError(
            f"config key {key!r} is ambiguous: write {' or '.join(f'{h}.{key}' for h in hits)}"
        )
    raise UserError(f"unknown config key {key!r}: see `interp train --help` for the keys")


def from_dict(d: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a validated RunConfig from a nested dict ({"model": {"d_model": 64}}), over `base`."""
    base = base or RunConfig()
    if not isinstance(d, dict):
        raise UserError("a config must be a JSON object with sections world, model, train")
    sections = {s: dataclasses.asdict(getattr(base, s)) for s in SECTIONS}
    for section, values in d.items():
        if section not in SECTIONS:
            raise UserError(f"unknown config section {section!r}: use one of {list(SECTIONS)}")
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r} must be an object of key: value")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        for key, value in values.items():
            _find_key(f"{section}.{key}")
            sections[section][key] = _coerce(section, fields[key], value)
    cfg = RunConfig(**{s: SECTIONS[s](**v) for s, v in sections.items()})
    validate(cfg)
    return cfg


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `key=value` strings (dotted or unambiguous bare keys) and re-validate."""
    d: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set takes key=value, got {item!r}: e.g. --set train.steps=500")
        key, value = item.split("=", 1)
        section, name = _find_key(key.strip())
        d.setdefault(section, {})[name] = value.strip()
    return from_dict(d, base=cfg)


SOURCES = ("synthetic", "paper", "biography", "retrieval", "bridge")
# Upper bounds that no run of this kit comes near; beyond them a value is a typo, and would end
# in a traceback (a seed torch cannot take) or a run that never finishes.
MAX_SEED = 2**32 - 1
MAX_STEPS = 10_000_000
MAX_COUNT = 1_000_000  # people, names, title words, batch size
MAX_WIDTH = 65_536  # n_layers, d_model, n_heads, d_head, d_mlp, n_ctx
DEVICE = re.compile(r"cpu|cuda|cuda:\d+|auto")


def _in_range(name: str, value: int | float, lo: int | float, hi: int | float) -> None:
    if not lo <= value <= hi:
        raise UserError(f"{name} must be in [{lo}, {hi}], got {value}: pass a value in range")


def validate(cfg: RunConfig) -> None:
    """All checks on a config, in one place, each failing with one line that names the field and
    the fix: every number finite (`_coerce`) and in range, the cross-field constraints, and an
    estimate of the memory training needs against this machine's memory. Runs before anything is
    written: every config is built by `from_dict`, which calls this."""
    m, t, w = cfg.model, cfg.train, cfg.world
    for name, value in [
        ("n_layers", m.n_layers),
        ("d_model", m.d_model),
        ("n_heads", m.n_heads),
        ("d_mlp", m.d_mlp),
        ("n_ctx", m.n_ctx),
    ]:
        if value < 1:
            raise UserError(f"model.{name} must be positive, got {value}")
        _in_range(f"model.{name}", value, 1, MAX_WIDTH)
    if m.d_model % m.n_heads != 0 and m.d_head == 0:
        raise UserError(
            f"model.d_model ({m.d_model}) is not divisible by model.n_heads ({m.n_heads}): "
            f"choose n_heads that divides d_model, e.g. --set model.n_heads={_divisor(m.d_model)}"
        )
    if m.d_head < 0:
        raise UserError(f"model.d_head must be >= 0 (0 means d_model // n_heads), got {m.d_head}")
    _in_range("model.d_head", m.d_head, 0, MAX_WIDTH)
    if m.act_fn not in ACT_FNS:
        raise UserError(f"model.act_fn {m.act_fn!r} is not supported: use one of {ACT_FNS}")
    if m.normalization not in NORMALIZATIONS:
        raise UserError(
            f"model.normalization {m.normalization!r} unknown: use one of {NORMALIZATIONS}"
        )
    if m.positional_embedding not in POSITIONALS:
        raise UserError(f"model.positional_embedding must be one of {POSITIONALS}")
    _in_range("model.query_layers", m.query_layers, 0, MAX_WIDTH)
    if m.query_layers and t.objective not in ENCODER_DECODER_OBJECTIVES:
        raise UserError(
            f"model.query_layers={m.query_layers} builds the encoder-decoder, which has no causal "
            f"head: train it with one of {ENCODER_DECODER_OBJECTIVES}, or set model.query_layers=0"
        )
    if m.query_layers and m.positional_embedding != "rotary":
        raise UserError(
            "the encoder-decoder's query stream knows its position only through rotary "
            "attention: set model.positional_embedding=rotary"
        )
    if w.source not in SOURCES:
        raise UserError(f"world.source {w.source!r} unknown: use one of {SOURCES}")
    if w.source == "retrieval" and not 1 <= w.title_length <= 26:
        raise UserError(
            f"world.source=retrieval makes each key and value of title_length tokens, 1 to 26, "
            f"got {w.title_length}: set world.title_length=2 (Kitouni et al.'s pairs)"
        )
    _in_range("world.seed", w.seed, 0, MAX_SEED)
    if w.source == "biography":
        _validate_biography(w)
    if w.source == "paper" and (not w.data_version or "/" in w.data_version):
        raise UserError(
            f"world.data_version must name one folder of data/reverse_experiments/, got "
            f"{w.data_version!r}: e.g. --set world.data_version=june_version_7921032488"
        )
    if w.source == "bridge":
        _validate_bridge(w)
    elif w.bridge:
        raise UserError(
            f"world.bridge={w.bridge} is a condition of the bridge world: set world.source=bridge "
            "or world.bridge=''"
        )
    if w.source == "synthetic":
        _in_range("world.n_people_per_subset", w.n_people_per_subset, 4, MAX_COUNT)
        if not 1 <= w.n_train_templates <= 8 or not 1 <= w.n_heldout_templates <= 4:
            raise UserError("world.n_train_templates must be 1..8 and n_heldout_templates 1..4")
        if not 2 <= w.n_roles <= 12:
            raise UserError(f"world.n_roles must be 2..12, got {w.n_roles}")
        for name, value, lo in [
            ("n_first_names", w.n_first_names, 1),
            ("n_last_names", w.n_last_names, 1),
            ("n_first_name_classes", w.n_first_name_classes, 1),
            ("n_title_words", w.n_title_words, 1),
            ("title_length", w.title_length, 1),
            ("n_new_people", w.n_new_people, 0),
        ]:
            _in_range(f"world.{name}", value, lo, 8 if name == "title_length" else MAX_COUNT)
        if w.n_first_names % w.n_first_name_classes != 0:
            raise UserError("world.n_first_names must be a multiple of world.n_first_name_classes")
        _check_pools(w, 3 * w.n_people_per_subset + w.n_new_people, "descriptions")
    _in_range("train.steps", t.steps, 1, MAX_STEPS)
    _in_range("train.batch_size", t.batch_size, 1, MAX_COUNT)
    _in_range("train.seed", t.seed, 0, MAX_SEED)
    _in_range("train.warmup_steps", t.warmup_steps, 0, MAX_STEPS)
    _in_range("train.eval_every", t.eval_every, 0, MAX_STEPS)
    _in_range("train.checkpoint_every", t.checkpoint_every, 0, MAX_STEPS)
    if not 0 < t.lr <= 1:
        raise UserError(f"train.lr must be in (0, 1], got {t.lr}: e.g. train.lr=3e-3")
    _in_range("train.grad_clip", t.grad_clip, 0, 1e6)
    _in_range("train.weight_decay", t.weight_decay, 0, 10)
    if t.lr * t.weight_decay >= 1:
        raise UserError(
            f"train.lr x train.weight_decay is {t.lr * t.weight_decay:g}: at 1 or more AdamW's "
            "decay step flips the sign of every weight; lower one of them"
        )
    if not 0 <= t.min_lr_ratio <= 1:
        raise UserError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if not DEVICE.fullmatch(t.device):
        raise UserError(f"train.device {t.device!r} unknown: use cpu, cuda, cuda:N or auto")
    need_bytes, have_bytes = estimated_memory(cfg), machine_memory()
    if have_bytes and need_bytes > have_bytes:
        raise UserError(
            f"training this model needs about {need_bytes / 2**30:.1f} GiB (weights, AdamW, "
            f"activations of one batch), more than this machine's {have_bytes / 2**30:.1f} GiB: "
            "lower model.d_model, model.n_ctx, model.n_layers or train.batch_size"
        )
    if t.objective not in OBJECTIVE_NAMES:
        raise UserError(
            f"train.objective {t.objective!r} unknown: use one of {sorted(OBJECTIVE_NAMES)}"
        )


def estimated_memory(cfg: RunConfig) -> int:
    """Bytes training needs, roughly (float32): weights, gradients and two AdamW moments, the
    activations one batch keeps for the backward pass (residual stream, attention pattern,
    MLP, logits), and TransformerLens's n_ctx x n_ctx causal mask per layer. An estimate that
    is right within a small factor, to refuse a typo (d_model=10**5), not to tune a batch."""
    m, t, w = cfg.model, cfg.train, cfg.world
    d_head = m.resolved_d_head
    d_vocab = 4096 if w.source == "paper" else w.n_first_names + w.n_last_names + 512
    d_vocab += w.n_title_words if w.source == "synthetic" else 0
    per_layer = 4 * m.d_model * m.n_heads * d_head + 2 * m.d_model * m.d_mlp
    params = m.n_layers * per_layer + 2 * d_vocab * m.d_model + m.n_ctx * m.d_model
    tokens = t.batch_size * m.n_ctx
    acts = tokens * m.n_layers * (12 * m.d_model + 3 * m.d_mlp + 3 * m.n_heads * m.n_ctx)
    acts += 3 * tokens * d_vocab
    return 4 * (4 * params + acts) + m.n_layers * m.n_ctx**2


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_device(device: str, flag: str = "--device") -> str:
    """Check a device name and that it exists here; return it resolved ('auto' -> 'cuda' when
    CUDA is present, else 'cpu'). One line instead of torch's traceback for `--device tpu`, or
    `cuda` on a machine without a GPU. Every command that takes --device calls this first."""
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise UserError(f"{flag} {device!r} unknown: use cpu, cuda, cuda:N or auto")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {device} asked for but CUDA is not available: use cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(
                f"{flag} {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                "counted from cuda:0"
            )
    return device


def _validate_biography(w: WorldConfig) -> None:
    """The biography world's checks (interp.data.biography)."""
    _in_range("world.n_people_per_subset", w.n_people_per_subset, 4, MAX_COUNT)
    if not 2 <= w.n_attribute_values <= 100:
        raise UserError(f"world.n_attribute_values must be 2..100, got {w.n_attribute_values}")
    if not 1 <= w.bio_multiplicity <= 64:
        raise UserError(f"world.bio_multiplicity must be 1..64, got {w.bio_multiplicity}")
    if w.bio_permute not in (0, 1) or w.bio_fullname not in (0, 1):
        raise UserError("world.bio_permute and world.bio_fullname must be 0 or 1")
    if not 2 <= w.n_roles <= 12:
        raise UserError(f"world.n_roles must be 2..12, got {w.n_roles}")
    for name in ("n_first_names", "n_last_names", "n_first_name_classes"):
        _in_range(f"world.{name}", getattr(w, name), 1, MAX_COUNT)
    if w.n_first_names % w.n_first_name_classes != 0:
        raise UserError("world.n_first_names must be a multiple of world.n_first_name_classes")
    _check_pools(w, 2 * w.n_people_per_subset, "works")


# The bridge world's training sets (interp.data.bridge.RECIPES).
BRIDGE_CONDITIONS = ("forward", "ocr", "idn")


def _validate_bridge(w: WorldConfig) -> None:
    """The bridge world's checks (interp.data.bridge): a condition, relations made of role
    pairs, enough pairs that every role word is some pair's forward relation, enough names."""
    if w.bridge not in BRIDGE_CONDITIONS:
        raise UserError(
            f"world.bridge {w.bridge!r} unknown for world.source=bridge: use one of "
            f"{BRIDGE_CONDITIONS}"
        )
    if not 2 <= w.n_roles <= 12:
        raise UserError(
            f"world.n_roles must be 2..12 (relations are pairs of roles), got {w.n_roles}"
        )
    n_words = 2 * (w.n_roles // 2)
    if not n_words <= w.n_people_per_subset <= MAX_COUNT:
        raise UserError(
            f"world.n_people_per_subset={w.n_people_per_subset} pairs, but the bridge world "
            f"needs at least {n_words} (every relation word forward in some pair): raise it"
        )
    for name in ("n_first_names", "n_last_names", "n_first_name_classes"):
        _in_range(f"world.{name}", getattr(w, name), 1, MAX_COUNT)
    if w.n_first_names % w.n_first_name_classes != 0:
        raise UserError("world.n_first_names must be a multiple of world.n_first_name_classes")
    if w.n_first_names * w.n_last_names < 4 * w.n_people_per_subset:
        raise UserError(
            f"world has {w.n_first_names}x{w.n_last_names} name pairs for "
            f"{2 * w.n_people_per_subset} people: raise world.n_first_names or world.n_last_names"
        )


def _check_pools(w: WorldConfig, need: int, entities: str) -> None:
    """Enough distinct names and descriptions (or works) for `need` people, twice over (the
    world draws without replacement)."""
    if w.n_first_names * w.n_last_names < 2 * need:
        raise UserError(
            f"world has {w.n_first_names}x{w.n_last_names} name pairs for {need} people: "
            "raise world.n_first_names or world.n_last_names"
        )
    if w.n_roles * w.n_title_words**w.title_length < 2 * need:
        raise UserError(f"too few distinct {entities}: raise world.n_title_words")


def _divisor(n: int) -> int:
    return next(k for k in (4, 2, 1) if n % k == 0)


def describe() -> str:
    """Every config key with its default and help text (shown by `interp train --help`)."""
    lines = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else ""
            lines.append(f"  {section}.{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)


# Presets. `tiny` trains in seconds (tests, the notebook); `default` is the study's world and model.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "world": {
            "n_people_per_subset": 16,
            "n_train_templates": 3,
            "n_heldout_templates": 2,
            "n_first_names": 12,
            "n_last_names": 16,
            "n_roles": 4,
            "n_title_words": 10,
            "n_new_people": 8,
        },
        "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "d_mlp": 256, "n_ctx": 24},
        "train": {
            "steps": 400,
            "batch_size": 32,
            "lr": 3e-3,
            "warmup_steps": 20,
            "eval_every": 0,
            "checkpoint_every": 100,
        },
    },
    # The field defaults: 100 people per subset (probes train and test on disjoint people), a
    # 4-layer d_model 64 GPT, 800 steps: one run trains in ~30-45 s on one CPU thread and reaches
    # 100% same-direction exact match on training templates with 0% reverse.
    "default": {},
    # Berglund et al. (2023) Exp. 1 on its published files (interp.data.paper); n_ctx holds the
    # longest prompt (34 BPE tokens) plus the greedy decoding budget (longest answer 26 + 2).
    # 1000 steps (~18 epochs of the 3600 lines): ~6 min training + ~2.5 min evaluation on one
    # CPU thread; the training loss reaches its floor (the unpredictable template and name).
    "paper_exp1": {
        "world": {"source": "paper", "data_dir": "../shared/datasets/reversal_curse_exp1"},
        "model": {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_mlp": 512, "n_ctx": 64},
        "train": {
            "steps": 1000,
            "batch_size": 64,
            "lr": 2e-3,
            "warmup_steps": 100,
            "eval_every": 0,
            "checkpoint_every": 250,
        },
    },
}


def load_config(
    preset: str | None = None, config_file: str | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Preset or JSON file, then `--set` overrides. Raises UserError on any bad input."""
    if preset and config_file:
        raise UserError("give --preset or --config, not both")
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise UserError(f"config file {path} not found: check the path")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(
                f"config file {path} is not valid JSON ({e.msg}, line {e.lineno})"
            ) from None
        except UnicodeDecodeError as e:
            raise UserError(
                f"config file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8 JSON"
            ) from None
        except RecursionError:
            raise UserError(
                f"config file {path} is nested too deeply: a config is sections of key: value"
            ) from None
        cfg = from_dict(d)
    else:
        name = preset or "default"
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}: use one of {sorted(PRESETS)}")
        cfg = from_dict(PRESETS[name])
    return apply_overrides(cfg, overrides or [])


def config_from_json(d: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved in a run's config.json."""
    return from_dict(d)
