"""Where is a fact stored? The storage study on the biography world, against knowledge
augmentation (Allen-Zhu & Li, Physics of Language Models Part 3.1 and 3.2).

With one wording per person a model memorises facts "along the sentence" and the attributes are
not decodable at the name; with knowledge augmentation (several biographies per person, permuted
sentences, the full name in every sentence) they are, and QA extracts them for people never
questioned in training; the reverse (the person from the attribute) stays unreadable and inverse
search stays ~0% under the causal objective. Axes: the augmentation `level` (plain, augmented)
and, for `storage_scale`, the model `scale` (width, steps, people), whose ladder measures what it
takes to meet the forward targets (`interp.findings.storage`).

- `storage`: 100 people per subset on a 4-layer d_model 128 GPT, 800 steps, 3 seeds (each its
  own world, so every compared cell has 3 runs): the size the `storage_scale` ladder found to
  buy the most per CPU second (one seed: a fresh clone's make study PRESET=storage, 778 s on 2
  cores, 2026-11-30).
- `storage_gpu`: the size the ladder points to, with the evidence bars, for a GPU: d_model 256,
  300 people per subset, 2400 steps, 3 seeds. Unmeasured.
- `storage_scale`: the augmented level under the causal objective at each of `SCALES`.
- `storage_people`: the people ladder (`PEOPLE`): 100 to 800 people per subset at d_model
  128, steps in proportion, with the probes' positive controls beside the Q-probe: is the
  Q-probe capped by the probe's power (few people to fit) or by the model?
- `storage_tiny`: the pipeline end to end in about a minute; its numbers are not evidence.
"""

from __future__ import annotations

from interp.analysis.storage import StorageOptions
from interp.data.biography import LABELS
from interp.findings.storage import TARGET_EXTRACTION, TARGET_Q, collect_storage
from interp.findings.text import pct, table, vs, with_null
from interp.findings.verdicts import Claim, verdict
from interp.plan import Axis, Context, Preset, Use

CITATIONS = {
    "allen_zhu_31": "Allen-Zhu & Li 2023, Physics of Language Models Part 3.1: Knowledge "
    "Storage and Extraction, arXiv 2309.14316",
    "allen_zhu_32": "Allen-Zhu & Li 2023, Physics of Language Models Part 3.2: Knowledge "
    "Manipulation, arXiv 2309.14402",
}
# "plain" is bioS single (one biography, fixed order, the name once); "augmented" is Part 3.1's
# multi5 + permute + fullname.
LEVELS = Axis(
    "level",
    (
        ("plain", ("world.bio_multiplicity=1", "world.bio_permute=0", "world.bio_fullname=0")),
        ("augmented", ("world.bio_multiplicity=5", "world.bio_permute=1", "world.bio_fullname=1")),
    ),
)
_D128 = ("model.d_model=128", "model.d_mlp=512")
_D256 = ("model.d_model=256", "model.d_mlp=1024")
SCALES = Axis(
    "scale",
    (
        ("d64_s1500", ("train.steps=1500",)),
        # checkpoints every 1000 steps: extraction within the schedule can be read from them
        ("d64_s4000", ("train.steps=4000", "train.checkpoint_every=1000")),
        ("d128_s800", (*_D128, "train.steps=800")),
        ("d256_s800", (*_D256, "train.steps=800")),
        ("d128_s1600_p400", (*_D128, "train.steps=1600", "world.n_people_per_subset=200")),
    ),
)
# The people ladder at a fixed width: epochs held about constant (steps in proportion to people),
# so a rung differs from the last in how many people there are to store and to probe.
# 800 per subset (about 25 min a run on 2 cores; 1600 would take over 30) needs 2 x 1600 name
# pairs: that rung alone has 80 last names instead of 40 (every other pool as on the others).
PEOPLE = Axis(
    "scale",
    tuple(
        (f"d128_p{n}", (*_D128, f"train.steps={8 * n}", f"world.n_people_per_subset={n}",
                        *(("world.n_last_names=80",) if n > 400 else ())))
        for n in (100, 200, 400, 800)
    ),
)  # fmt: skip
_WORLD = ("world.source=biography", "train.eval_every=0", "model.n_ctx=48")
_PROBES = {"storage": Use(StorageOptions(permutations=100))}
_OBJECTIVES = ("causal", "reverse_entity", "mlm_u_hybrid")


def checks(ctx: Context, name: str) -> list[Claim]:
    """Allen-Zhu & Li's predictions for the storage study, each judged by its rule."""
    f = ctx.get(name) or {}

    def cell(level: str, objective: str, key: str) -> dict | None:
        node: dict | None = f.get("cells", {}).get(level, {}).get(objective, {}).get(key)
        return node

    q_plain, q_aug = cell("plain", "causal", "q_probe"), cell("augmented", "causal", "q_probe")
    tr = cell("plain", "causal", "extract_forward_trained")
    un = cell("plain", "causal", "extract_forward_unseen")
    un_aug = cell("augmented", "causal", "extract_forward_unseen")
    out = [
        Claim(
            "Without augmentation (one biography, fixed order), the attributes are not linearly "
            "decodable at the name: the Q-probe's best layer is not above its permutation null",
            verdict("not above null", q_plain), with_null(q_plain), "allen_zhu_31",
            "near chance (bioS single)",
        ),
        Claim(
            "Without augmentation the facts are memorised but not extractable: forward QA on "
            "QA-trained people above QA on people never questioned",
            verdict("lift", tr, un), vs(tr, un), "allen_zhu_31", "memorised, extraction low",
        ),
        Claim(
            "Augmentation (x5 biographies, permuted, full name) lifts the Q-probe at the name",
            verdict("lift", q_aug, q_plain), vs(q_aug, q_plain), "allen_zhu_31",
            "near chance -> near-perfect",
        ),
        Claim(
            "Augmentation lifts forward extraction on people never questioned",
            verdict("lift", un_aug, un), vs(un_aug, un), "allen_zhu_31", "low -> ~96%",
        ),
        Claim(
            f"With augmentation the Q-probe at the name reaches the target {TARGET_Q:.0%} (mean "
            "of the four attributes)",
            verdict("target", q_aug, TARGET_Q), with_null(q_aug), "allen_zhu_31", "near-perfect",
        ),
        Claim(
            f"With augmentation forward extraction on unseen people reaches the target "
            f"{TARGET_EXTRACTION:.0%}",
            verdict("target", un_aug, TARGET_EXTRACTION), pct(un_aug), "allen_zhu_31", "~96%",
        ),
    ]  # fmt: skip
    for level in ("plain", "augmented"):
        inv = cell(level, "causal", "extract_inverse_unseen")
        out.append(Claim(
            f"Inverse search (the person from an attribute) stays near 0% under next-token "
            f"training ({level}, unseen people)",
            verdict("near", inv, 0.0), pct(inv), "allen_zhu_32", "about 0% in every regime",
        ))  # fmt: skip
    rq = cell("augmented", "causal", "reverse_q")
    out.append(Claim(
        "The person is not decodable from the attribute alone under next-token training "
        "(augmented; reverse Q-probe: the work -> first-name class, not above its null)",
        verdict("not above null", rq), with_null(rq), "allen_zhu_32",
        "(the mechanism of inverse search failing)",
    ))  # fmt: skip
    base = cell("augmented", "causal", "extract_inverse_unseen")
    for objective in ("reverse_entity", "mlm_u_hybrid"):
        x = cell("augmented", objective, "extract_inverse_unseen")
        out.append(Claim(
            f"{objective} lifts inverse search above next-token training (augmented, unseen "
            "people, causal decoding)",
            verdict("lift", x, base), vs(x, base), "allen_zhu_32",
            "(the issue: measurably higher)",
        ))  # fmt: skip
    return out


def cells_table(ctx: Context, name: str) -> str:
    """Per level x objective: Q-probe, reverse Q, positive controls, extraction."""
    f = ctx.get(name) or {}
    rows = []
    for level in f.get("levels", []):
        for objective in f.get("objectives", []):
            c = f.get("cells", {}).get(level, {}).get(objective)
            if c is None:
                continue
            q, rq = c["q_probe"], c["reverse_q"]
            p = ", ".join(f"{x:.3f}" for x in rq["p"])
            rows.append(
                [f"{level} ({c['augmentation']})", objective,
                 f"{c['n_runs']} x {'/'.join(str(n) for n in c['n_people'])}",
                 f"{pct(q)} ({100 * q['null95']:.1f} / {100 * q['control']:.1f} / "
                 f"{100 * q['chance']:.1f}%)",
                 f"{pct(rq)} ({100 * rq['null95']:.1f}%, p {p})",
                 f"{pct(c['pos_role_from_work'])} / {pct(c['pos_first_class_from_name'])}",
                 f"{pct(c['extract_forward_unseen'])} ({pct(c['extract_forward_trained'])})",
                 pct(c["extract_inverse_unseen"])]
            )  # fmt: skip
    header = [
        "augmentation", "objective", "runs x people",
        "Q-probe at the name (null95 / control / chance)", "reverse Q-probe (null95, p)",
        "positive controls: role from work / first-name class from name",
        "forward QA, unseen (QA-trained)", "inverse QA, unseen",
    ]  # fmt: skip
    return table(header, rows)


def scale_table(ctx: Context, _: str) -> str:
    """The `storage_scale` ladder (read from any preset's template: `storage` shows it too)."""
    return ladder_table(ctx, "storage_scale")


def ladder_table(ctx: Context, name: str) -> str:
    """A ladder (`storage_scale`, `storage_people`): what width, steps and people bought against
    the targets, with the probes' positive controls beside the Q-probe."""
    f = ctx.get(name)
    if not f or not f.get("scale"):
        return f"*Not run: `make study PRESET={name}` makes it.*"
    rows = [
        [r["scale"], str(r["d_model"]), str(r["steps"]), str(r["people"]),
         f"{r['loss']:.3f} / {r['floor']:.3f}", f"{r['train_seconds']:.0f}",
         " / ".join(f"{r['q_per_attribute'][lab]:.2f}" for lab in LABELS), pct(r["q_probe"]),
         _controls(r), pct(r["extract_forward_unseen"]), pct(r["extract_inverse_unseen"]),
         "yes" if r["targets_met"] else "no"]
        for r in f["scale"]
    ]  # fmt: skip
    header = [
        "scale", "d_model", "steps", "people probed (unseen)", "loss / memorisation floor",
        "train s", "Q-probe (role / city / year / employer)", "Q-probe mean",
        "positive controls: role from work / class from name", "forward QA, unseen",
        "inverse QA, unseen", "targets met",
    ]  # fmt: skip
    return table(header, rows)


def _controls(row: dict) -> str:
    """A ladder row's probe positive controls (rows collected before they were kept: n/a)."""
    if "pos_role_from_work" not in row:
        return "n/a"
    return f"{pct(row['pos_role_from_work'])} / {pct(row['pos_first_class_from_name'])}"


def _storage(name: str, help: str, **kw: object) -> Preset:
    fields: dict = {
        "run_preset": "default",
        "objectives": _OBJECTIVES,
        "seeds": (0,),
        "instruments": _PROBES,
        "axes": (LEVELS,),
        "collect": collect_storage,
        "claims": checks,
        "citations": CITATIONS,
        "tables": {"storage": cells_table, "storage_scale": scale_table, "ladder": ladder_table},
        "reads": ("storage_scale",),
        **kw,
    }
    return Preset(name=name, help=help, **fields)


PRESETS = (
    _storage(
        "storage",
        "where a fact is stored: probes and QA on the biography world, plain vs augmented",
        overrides=(
            *_WORLD,
            "world.n_people_per_subset=100",
            "train.checkpoint_every=0",
            *_D128,
            "train.steps=800",
        ),
        seeds=(0, 1, 2),  # every compared cell 3 runs (each seed its own world)
    ),  # fmt: skip
    _storage(
        "storage_gpu",
        "the storage study at the size its ladder points to, 3 seeds, for one GPU",
        overrides=(
            *_WORLD,
            "train.checkpoint_every=0",
            *_D256,
            "train.steps=2400",
            "world.n_people_per_subset=300",
            # 2 x 600 people need more name pairs than the default pools' 24 x 40
            "world.n_first_names=48",
        ),
        seeds=(0, 1, 2),
    ),  # fmt: skip
    _storage(
        "storage_scale",
        "what it takes: the augmented level at several widths, steps and numbers of people",
        overrides=(*_WORLD, "world.n_people_per_subset=100", "train.checkpoint_every=0"),
        objectives=("causal",),
        axes=(Axis("level", LEVELS.values[1:]), SCALES),
    ),  # fmt: skip
    _storage(
        "storage_people",
        "the people ladder: the augmented level at d_model 128 with 100, 200, 400 and 800 people "
        "per subset (steps in proportion), the probes' positive controls beside the Q-probe",
        # 2 x 400 people need more name pairs than the default pools' 24 x 40: every rung the same
        overrides=(*_WORLD, "train.checkpoint_every=0", "world.n_first_names=48"),
        objectives=("causal",),
        axes=(Axis("level", LEVELS.values[1:]), PEOPLE),
    ),  # fmt: skip
    _storage(
        "storage_tiny",
        "the storage pipeline end to end in about a minute (not evidence)",
        run_preset="tiny",
        overrides=(*_WORLD, "world.n_people_per_subset=8", "train.steps=40"),
        objectives=("causal",),
        instruments={
            "storage": Use(StorageOptions(folds=2, inner_folds=2, Cs=(1.0,), permutations=5))
        },
    ),
)
