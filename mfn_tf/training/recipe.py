"""Training recipes: the three insightface stages as TOML files in `recipes/`.

A recipe is resolved in layers, later ones winning: the defaults of
`Recipe`, the stage file (`recipes/softmax.toml`, `arcface.toml`,
`finetune.toml`), any override files (`recipes/cpu.toml`, or a path), and
`--set key=value` pairs. Unknown keys are rejected wherever they appear.
"""

import dataclasses
import json
import tomllib
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
STAGES = ("softmax", "arcface", "finetune")
LOSSES = ("softmax", "arcface", "cosface", "combined")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PROGRESS_STYLES = ("bar", "line")
DISTRIBUTE_MODES = ("auto", "mirrored", "none")


class RecipeError(ValueError):
    """An invalid recipe file, key or value."""


@dataclasses.dataclass
class Recipe:
    """Every setting of a training stage. The stage files set the values
    that differ between stages; see `recipes/*.toml` for the reasons."""

    stage: str = "softmax"
    # Head and loss.
    loss: str = "softmax"
    margin_s: float = 64.0
    margin_m: float = 0.5
    margin_m1: float = 1.0  # combined margin: cos(m1 * theta + m2) - m3
    margin_m2: float = 0.3
    margin_m3: float = 0.2
    easy_margin: bool = False
    # Learning rate, in iterations.
    lr: float = 0.1
    lr_steps: list = dataclasses.field(default_factory=list)
    warmup_steps: int = 0
    plateau_monitor: str = ""  # e.g. "agedb_30_accuracy"; empty: no plateau drops
    plateau_patience: int = 3  # evaluations without improvement before a drop
    max_steps: int = 1000
    # Optimizer: momentum SGD with MXNet's coupled weight decay.
    momentum: float = 0.9
    wd: float = 4e-5
    fc7_wd_mult: float = 10.0
    after_gdc_wd_mult: float = 1.0  # the paper's 10x for layers after the GDConv
    # Batch: insightface's --per-batch-size; the global batch is this times
    # the number of replicas.
    per_device_batch: int = 128
    # Network.
    embedding_size: int = 128
    width_multiplier: float = 1.0
    embedding_layer: str = "dense"
    # Data.
    mirror: bool = True
    seed: int = 0
    # Verification, checkpoints and logging.
    targets: list = dataclasses.field(default_factory=list)
    best_target: str = ""
    verbose: int = 2000  # iterations between verifications (one Keras epoch)
    checkpoint_every: int = 0  # 0: at every verification
    keep_checkpoints: int = 5  # periodic checkpoints kept; best and final are always kept
    progress: str = "bar"
    log_every: int = 100
    # Devices and numerics.
    precision: str = "float32"
    distribute: str = "auto"

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


_FIELDS = {field.name: field for field in dataclasses.fields(Recipe)}


def _coerce(key, value, source):
    """Check `value` against the type of field `key`; strings from `--set`
    are parsed."""
    default = getattr(Recipe(), key)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                value = [item.strip() for item in value.split(",") if item.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            if key == "lr_steps":
                return [int(item) for item in value]
            return [str(item) for item in value]
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        expected = type(default).__name__
        if isinstance(default, list):
            item = "integers" if key == "lr_steps" else "names"
            expected = f"a comma-separated list of {item}"
        raise RecipeError(f"{source}: invalid value {value!r} for {key!r}, expected {expected}") from None


def _apply(values, settings, source):
    unknown = sorted(set(settings) - set(_FIELDS))
    if unknown:
        raise RecipeError(
            f"{source}: unknown recipe key(s) {', '.join(unknown)}. "
            f"Valid keys: {', '.join(sorted(_FIELDS))}"
        )
    for key, value in settings.items():
        values[key] = _coerce(key, value, source)


def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise RecipeError(f"recipe {path} is a folder; pass a .toml file") from None
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: invalid TOML: {error}") from None


def _override_path(name):
    # A bare name is always a recipe in recipes/, even where the working
    # folder has a file or folder of that name (such as the demo's output).
    path = Path(name)
    if path.suffix == ".toml" or len(path.parts) > 1:
        return path
    candidate = RECIPES_DIR / f"{name}.toml"
    if not candidate.exists():
        available = sorted(p.stem for p in RECIPES_DIR.glob("*.toml") if p.stem not in STAGES)
        raise RecipeError(
            f"unknown override {name!r}: no file {candidate}. "
            f"Available: {', '.join(available)}, or pass a path to a .toml file"
        )
    return candidate


def parse_set_options(pairs):
    """Turn `["key=value", ...]` into a dict, rejecting malformed pairs."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set expects key=value, got {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


def load_recipe(stage, overrides=(), settings=None):
    """Resolve the recipe of `stage`.

    Args:
        stage: "softmax", "arcface" or "finetune".
        overrides: names of files in `recipes/` (such as "cpu") or paths to
            TOML files, applied in order over the stage.
        settings: a dict of final values, such as parsed `--set` options.

    Raises:
        RecipeError: an unknown stage, key or override, or an invalid value.
    """
    if stage not in STAGES:
        raise RecipeError(
            f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}"
        )
    values = {"stage": stage}
    stage_path = RECIPES_DIR / f"{stage}.toml"
    _apply(values, _read_toml(stage_path), stage_path)
    for name in overrides:
        path = _override_path(name)
        _apply(values, _read_toml(path), path)
    if settings:
        _apply(values, settings, "--set")
    if values.get("stage", stage) != stage:
        raise RecipeError(f"the stage is set by --stage, not by a recipe key (got {values['stage']!r})")
    recipe = Recipe(**values)
    validate_recipe(recipe)
    return recipe


def validate_recipe(recipe):
    """Check value ranges and choices that a type check cannot."""
    choices = {
        "loss": LOSSES,
        "precision": PRECISIONS,
        "progress": PROGRESS_STYLES,
        "distribute": DISTRIBUTE_MODES,
        "embedding_layer": ("dense", "conv"),
    }
    for key, allowed in choices.items():
        if getattr(recipe, key) not in allowed:
            raise RecipeError(
                f"invalid {key} {getattr(recipe, key)!r}; expected one of {', '.join(allowed)}"
            )
    for key in ("max_steps", "per_device_batch", "verbose", "embedding_size", "log_every"):
        if getattr(recipe, key) < 1:
            raise RecipeError(f"{key} must be at least 1, got {getattr(recipe, key)}")
    for key in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "plateau_patience"):
        if getattr(recipe, key) < 0:
            raise RecipeError(f"{key} must not be negative, got {getattr(recipe, key)}")
    if recipe.lr <= 0:
        raise RecipeError(f"lr must be positive, got {recipe.lr}")
    if list(recipe.lr_steps) != sorted(set(recipe.lr_steps)):
        raise RecipeError(f"lr_steps must be strictly increasing, got {recipe.lr_steps}")
    if recipe.best_target and recipe.targets and recipe.best_target not in recipe.targets:
        raise RecipeError(
            f"best_target {recipe.best_target!r} is not among targets {recipe.targets}"
        )
    if recipe.checkpoint_every % recipe.verbose:
        # A resumed run restarts at a checkpoint; verification stays on the
        # same steps only if checkpoints fall on verification steps.
        raise RecipeError(
            f"checkpoint_every ({recipe.checkpoint_every}) must be a multiple of "
            f"verbose ({recipe.verbose}), or 0 to checkpoint at every verification"
        )
    if recipe.plateau_monitor and recipe.plateau_patience < 1:
        raise RecipeError("plateau_patience must be at least 1 when plateau_monitor is set")
