"""Configuration: YAML files checked against a schema, ``--set key.sub=value`` overrides, and where
the default configs live.

Every stage config is a pydantic model whose sections forbid unknown keys, so a misspelt key is an
error naming the key and the nearest valid one (``training.epochz: unknown key; did you mean
'training.epochs'?``) instead of a setting silently ignored. Types are checked too.

The default configs ship with the package (``configs/`` is packaged as ``dsdocre.configs``), so
``dsdocre finetune`` works from any directory: a relative config path that does not exist under
the current directory is looked up among the packaged configs.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dsdocre.errors import UserError

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A config section: unknown keys are errors; values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def packaged_configs_dir() -> Path:
    """The directory of the default configs: ``configs/`` of the checkout, installed as
    ``dsdocre.configs``."""
    from importlib import resources

    try:
        return Path(str(resources.files("dsdocre.configs")))
    except ModuleNotFoundError:  # running from a source tree without an install
        return Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """``path`` as given when it exists; else, for a relative path, the packaged config of that
    name (``configs/finetune.yaml`` and ``finetune.yaml`` both name the packaged one)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts and path.parts[0] == "configs" else path.parts
    packaged = packaged_configs_dir().joinpath(*parts) if parts else None
    if packaged is not None and packaged.exists():
        return packaged
    return path


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """A config file as a dict; a ``base:`` key names a config it extends (ablations are a few lines)."""
    resolved = resolve_config_path(path).resolve()
    if not resolved.is_file():
        raise UserError(f"config file {path} does not exist (packaged configs: {packaged_configs_dir()})")
    try:
        data = yaml.safe_load(resolved.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"config file {resolved} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {resolved} must hold a mapping of sections, not {type(data).__name__}")
    if "base" in data:  # `base: other.yaml`: that config, with this file's values over it
        base_name = data.pop("base")
        beside = resolved.parent / str(base_name)
        chain = _seen + (resolved,)
        base_path = beside if beside.is_file() else Path(str(base_name))
        if resolve_config_path(base_path).resolve() in chain:
            raise UserError(f"config file {resolved}: `base: {base_name}` makes a cycle")
        data = _merged(read_yaml(base_path, chain), data)
    return data


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_override(config: dict, item: str) -> None:
    """``key.sub=value`` (value parsed as YAML) into the nested dict ``config``."""
    if "=" not in item:
        raise UserError(f"override {item!r} is not of the form key.sub=value")
    key, value = item.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"override {item!r}: {part} is not a section")
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise UserError(f"override {item!r}: the value is not valid YAML: {err}") from None


def _valid_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in schema.model_fields.items():
        keys.append(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _valid_keys(annotation, f"{prefix}{name}.")
    return keys


def _describe(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    valid = _valid_keys(schema)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
            siblings = [k for k in valid if k.startswith(parent) and "." not in k[len(parent):]]
            near = difflib.get_close_matches(key, siblings, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys here: {', '.join(siblings)}"
            lines.append(f"{key}: unknown key{hint}")
        elif e["type"] == "missing":
            lines.append(f"{key}: missing required key")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(lines)


def validate(schema: type[S], data: dict, source: str = "config") -> S:
    """``data`` checked against ``schema``; a :class:`UserError` naming each bad key otherwise."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise UserError(_describe(err, schema, source)) from None


def load_config(schema: type[S], path: str | Path, overrides: list[str] | None = None) -> S:
    """Read the YAML at ``path``, apply ``--set`` overrides, validate against ``schema``."""
    data = read_yaml(path)
    for item in overrides or []:
        apply_override(data, item)
    source = f"config {path}" + (f" with --set {' '.join(overrides)}" if overrides else "")
    return validate(schema, data, source)


def load_deepspeed_config(path: str | Path) -> dict:
    """The DeepSpeed JSON: ZeRO stage, precision, optimizer, batch size, clipping live there."""
    resolved = resolve_config_path(path)
    if not resolved.is_file():
        raise UserError(f"DeepSpeed config {path} does not exist")
    try:
        config = json.loads(resolved.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"DeepSpeed config {resolved} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise UserError(f"DeepSpeed config {resolved} must hold a JSON object")
    return config


def to_plain(obj: Any) -> Any:
    """A config (or section) as plain JSON-able data, for records and logs."""
    return obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj


def add_stage_arguments(parser, default_config: str, example: str = "training.epochs=3") -> None:
    """The arguments every training stage takes: ``--config``, ``--set``, ``--encoder``, ``--output-dir``."""
    parser.add_argument("--config", default=default_config,
                        help="stage config (YAML; a relative path not found here is looked up among the "
                             "packaged configs); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value, e.g. --set {example} (repeatable)")
    parser.add_argument("--encoder", help="a BERT-family model directory (overrides model.encoder)")
    parser.add_argument("--output-dir", help="overrides output_dir")


def load_stage_config(schema: type[S], args) -> S:
    """The stage config named by :func:`add_stage_arguments`' arguments, with ``--encoder`` and
    ``--output-dir`` applied."""
    config = load_config(schema, args.config, args.overrides)
    if args.encoder:
        config.model.encoder = args.encoder
    if args.output_dir:
        config.output_dir = args.output_dir
    return config
