"""What the command-line modules share: option parsing, the checks made before any work starts, loading of the
model, trigger and data a command names, and the JSON/table output (see :mod:`kerasbd.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are JSON when they parse (numbers, lists, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}.")
        out[key.replace("-", "_")] = _parse_value(value)
    return out


def _method_class(registry: dict[str, Any], kind: str, name: str, sets: Sequence[str], preset: str = "auto") -> tuple[Any, dict[str, Any]]:
    """The registered class ``name`` and its ``--set`` values, both checked (names, preset) before any work."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(registry))}.")
    cls, params = registry[name], _parse_sets(sets)
    if preset not in cls.preset_names():
        raise ConfigError(f"--preset {preset!r} is not a preset of {name}; choose one of {', '.join(cls.preset_names())}.")
    cls().with_params(**params)  # refuses unknown or invalid --set values now, not after loading the model
    return cls, params


def _configured(cls: Any, preset: str, params: dict[str, Any], images: np.ndarray, verbose: int) -> Any:
    """The method with ``--preset`` (``auto``: chosen by the clean images) and the ``--set`` values on top;
    the settings are printed before the run starts."""
    method = cls.preset(preset, images, **params)
    if verbose:
        print(f"settings: {cls.name} {method.preset_.describe()}" + (f"; --set {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ""))
    return method


def _check_out(path: str | None, given: str | None = None) -> None:
    """Refuse an output folder that is an existing file or lies below one, before any work is done
    (``given``: the ``--out`` value as typed, when ``path`` is derived from it)."""
    if not path:
        return
    target, shown = Path(path), given or path
    for p in (target, *target.parents):
        if p.exists():
            if not p.is_dir():
                where = "is" if p == target and given is None else f"lies below {p}, which is"
                raise ConfigError(f"--out {shown} {where} an existing file; choose a folder path.")
            if not os.access(p, os.W_OK):
                raise ConfigError(f"--out {shown}: {p} is not writable; choose another folder.")
            return


def _load_model(args: argparse.Namespace, input_spec: Any = None) -> Any:
    """``--model``: ``zoo:NAME``, or a file (see :func:`kerasbd.zoo.open_model`)."""
    from kerasbd import zoo

    return zoo.open_model(args.model, architecture=args.architecture, input_spec=input_spec, input_range=getattr(args, "input_range", None),
                          trust=args.trust)


def _check_input_range(args: argparse.Namespace, clf: Any, x: np.ndarray, y: np.ndarray, option: str) -> None:
    """Stop when the model's declared input range gives poor accuracy (under 50 %) on labelled data and the other
    range at least 50 % and twice as much: a raw 0-255 model fed 0-1 pixels (or the reverse) otherwise runs on
    silently at 10-30 %. A model that really takes the declared range only loses accuracy in the other one."""
    from kerasbd.models import as_logits_model

    spec = getattr(clf, "input_spec", None)
    if spec is None or args.model.startswith("zoo:"):  # zoo entries record their range
        return
    idx = np.random.default_rng(0).permutation(len(x))[:500]

    def accuracy(model: Any) -> float:
        return float(np.mean(as_logits_model(model).predict(x[idx], batch_size=256, verbose=0).argmax(1) == y[idx]))

    acc = accuracy(clf)
    if acc >= 0.5:
        return
    other = "0-255" if spec.range == "0-1" else "0-1"
    acc_other = accuracy(_load_model(argparse.Namespace(**{**vars(args), "input_range": other})))
    if acc_other < 0.5 or acc_other < 2 * acc:
        return
    message = (f"--model {args.model} classifies {acc:.1%} of {option} correctly with inputs in {spec.range} but {acc_other:.1%} "
               f"in {other}: the model expects {other} pixels; pass --input-range {other}")
    if args.input_range:
        print(f"warning: {message} (you gave --input-range {args.input_range}; going on as asked)", file=sys.stderr)
        return
    raise ConfigError(message + ".")


def _load_trigger(path: str | None) -> tuple[list[Any], Any]:
    if not path:
        return [], None
    from kerasbd.attacks import load_spec

    spec = load_spec(path)
    return list(spec.backdoors), spec.input_spec


def _load_data(path: str) -> tuple[Any, Any]:
    from kerasbd.data import load_data

    return load_data(path)


def _json_target(out: str | None) -> Path | None:
    """Where ``--out`` (a ``.json`` file or a folder) puts the JSON, checked before any work is done."""
    if not out:
        return None
    target = Path(out) if out.endswith(".json") else Path(out) / "result.json"
    if target.is_dir():
        raise ConfigError(f"--out {out}: {target} is a folder; give a .json file name or a folder.")
    _check_out(str(target.parent), given=out)
    return target


def _emit(target: Path | None, payload: dict[str, Any], table: str) -> None:
    print(table)
    if target is not None:
        from kerasbd.io import write_json

        write_json(target, payload)
        print(f"wrote {target}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {value}")
    return value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model file (.h5 full or weights-only, .keras) or zoo:NAME")
    p.add_argument("--architecture", help="architecture for a weights-only file (see kerasbd.models.ARCHITECTURES)")
    p.add_argument("--input-range", choices=["0-1", "0-255"], help="the model's own pixel range (default: from trigger spec, zoo, else 0-1)")
    p.add_argument("--trust", action="store_true", help="allow Lambda layers / custom classes (executes code from the file!)")
    p.add_argument("--trigger", help="trigger/target spec JSON (schema in README); for inspect: only to report how close "
                                     "the reversed trigger came to it; for detect without marked inputs: stamped on copies "
                                     "of --inputs, which are then taken as clean")


class _Parser(argparse.ArgumentParser):
    """argparse with usage mistakes as a one-line ``ConfigError`` (main prints ``error: ...``, exit status 2)."""

    def error(self, message: str) -> Any:  # noqa: D102 - argparse's hook
        raise ConfigError(f"{message} (see `{self.prog} --help`).")


def _verbosity_args(p: argparse.ArgumentParser) -> None:
    """``-v N`` / ``-q`` accepted after the subcommand too (SUPPRESS keeps the value given before it)."""
    p.add_argument("-v", "--verbose", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="0 quiet, 1 progress bars (default), 2 also one line per training epoch and TensorFlow's start-up log")
    p.add_argument("-q", "--quiet", dest="verbose", action="store_const", const=0, default=argparse.SUPPRESS, help="same as --verbose 0")


def _method_args(p: argparse.ArgumentParser, registry: dict[str, Any]) -> None:
    """``--preset`` and ``--set``: the settings of an inspector, defense or detector."""
    names = sorted({name for cls in registry.values() for name in cls.preset_names()})
    p.add_argument("--preset", default="auto", metavar="NAME",
                   help=f"named settings ({', '.join(names)}; which exist depends on the method); 'auto' (default) chooses "
                        "by the clean data's image size and number, 'original' = the paper's constants")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter on top of the preset (repeatable); values are JSON when they parse (lists, objects, "
                        "numbers); nested ones as a__b, e.g. inspector__inversion__steps=300 or intensive__median_ksize=3")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default=None, help="tf.distribute strategy: auto, default, mirrored, multi-worker")
    p.add_argument("--checkpoint-dir", default=None, help="keep finished work here; a rerun with the same settings resumes")
    p.add_argument("--restart", action="store_true", help="discard what --checkpoint-dir holds instead of resuming")
