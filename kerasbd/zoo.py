"""The zoo: facts about real published BadNets (and the data to evaluate them), and their checked loading.

The manifests in ``pretrained/*.json`` (installed as ``kerasbd._pretrained``) record, per file: source repository,
commit and path, sha256, size, format, architecture, input specification, known backdoors (trigger + target
mapping, in the trigger JSON schema of the attacks module), reported figures and license. The files themselves
are never shipped: set ``KERASBD_ZOO`` to the directory holding them (default: ``../shared/zoo`` beside the
repository). Every load verifies the checksum first.

Example:
    >>> [e["name"] for e in list_entries(role="backdoored")][:2]            # doctest: +SKIP
    ['csaw_f_mnist_all_to_all', 'csaw_f_mnist_all_to_all_weights']
    >>> clf = load_zoo_model("dillonsd_pattern_all_to_one")                 # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from kerasbd.errors import ConfigError, ZooError
from kerasbd.io import sha256_file

__all__ = ["ENV_VAR", "ROLES", "zoo_dir", "list_entries", "get_entry", "entry_path", "verify", "load_zoo_model", "find_by_sha256", "open_model"]

ENV_VAR = "KERASBD_ZOO"
ROLES = ("backdoored", "clean", "defended", "auxiliary", "data")


def zoo_dir() -> Path:
    """The zoo directory: ``$KERASBD_ZOO``, else ``../shared/zoo`` beside the repository, else beside the cwd.

    Raises:
        ZooError: none of these exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ZooError(f"{ENV_VAR}={env!r} is not a directory; point it at the folder holding the zoo's model files.")
        return path
    repo_root = Path(__file__).resolve().parent.parent
    candidates = [repo_root.parent / "shared" / "zoo", Path.cwd().parent / "shared" / "zoo", Path.cwd() / "shared" / "zoo"]
    for path in candidates:
        if path.is_dir():
            return path
    raise ZooError(
        f"the model zoo was not found (looked in {', '.join(str(c) for c in candidates)}). Set {ENV_VAR} to the "
        "directory holding the zoo's files (see the README section 'The zoo of real published BadNets')."
    )


def _manifest_folder() -> Any:
    try:
        return resources.files("kerasbd._pretrained")
    except ModuleNotFoundError:  # a source checkout that was not pip-installed
        return Path(__file__).resolve().parent.parent / "pretrained"


@functools.lru_cache(maxsize=1)
def _manifest() -> tuple[dict[str, Any], ...]:
    entries: list[dict[str, Any]] = []
    for item in sorted(_manifest_folder().iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            doc = json.loads(item.read_text(encoding="utf-8"))
            for entry in doc["entries"]:
                entries.append({**entry, "group": doc["group"]})
    names = [e["name"] for e in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:  # a packaging error, not a user error
        raise RuntimeError(f"duplicate zoo entry names in pretrained/*.json: {sorted(duplicates)}")
    return tuple(entries)


def list_entries(role: str | None = None) -> list[dict[str, Any]]:
    """All manifest entries (as dicts, in manifest order), optionally only those with the given ``role``."""
    if role is not None and role not in ROLES:
        raise ZooError(f"unknown role {role!r}; roles are {', '.join(ROLES)}.")
    return [json.loads(json.dumps(e)) for e in _manifest() if role is None or e["role"] == role]


def get_entry(name: str) -> dict[str, Any]:
    """One manifest entry by name (a copy; editing it changes nothing)."""
    for entry in _manifest():
        if entry["name"] == name:
            return json.loads(json.dumps(entry))
    raise ZooError(f"no zoo entry named {name!r}; `kerasbd zoo list` shows the {len(_manifest())} entries.")


def find_by_sha256(sha256: str) -> dict[str, Any] | None:
    """The entry whose file has this checksum, or None (e.g. to find the input spec of a zoo file loaded by path)."""
    for entry in _manifest():
        if entry.get("sha256") == sha256:
            return json.loads(json.dumps(entry))
    return None


def entry_path(name: str) -> Path:
    """Absolute path of an entry's file (or folder, for data sets stored as several files)."""
    entry = get_entry(name)
    path = zoo_dir() / entry["path"]
    if not path.exists():
        raise ZooError(f"zoo entry {name!r}: {path} is missing; the zoo directory {zoo_dir()} is incomplete.")
    return path


def _check(entry: dict[str, Any]) -> tuple[bool, str]:
    path = zoo_dir() / entry["path"]
    files = entry.get("files")
    expected = {path / rel: digest for rel, digest in files.items()} if files else {path: entry["sha256"]}
    for file, digest in expected.items():
        if not file.is_file():
            return False, f"missing: {file}"
        actual = sha256_file(file)
        if actual != digest:
            return False, f"checksum mismatch for {file}: expected {digest[:12]}…, found {actual[:12]}… (file changed or replaced)"
    return True, f"ok ({len(expected)} file{'s' if len(expected) > 1 else ''})"


def verify(name: str | None = None) -> list[tuple[str, bool, str]]:
    """Check sha256 of one entry or all: ``[(name, ok, message), ...]``. Never raises for a bad file."""
    entries = [get_entry(name)] if name is not None else list_entries()
    zoo_dir()  # a missing zoo is one clear error, not one line per entry
    return [(e["name"], *_check(e)) for e in entries]


def load_zoo_model(name: str, *, trust: bool = False) -> Any:
    """Load a zoo model as a :class:`~kerasbd.models.Classifier`, after verifying its checksum.

    Weights-only entries are loaded into their architecture; the input spec comes from the manifest and
    ``classifier.source["zoo_entry"]`` names the entry (its ``backdoors`` list gives the known triggers).
    """
    entry = get_entry(name)
    if entry["format"] not in ("full", "weights"):
        raise ZooError(f"zoo entry {name!r} is {entry['role']} ({entry['format']}), not a model.")
    ok, message = _check(entry)
    if not ok:
        raise ZooError(f"zoo entry {name!r}: {message}. Refusing to load an unverified model file.")
    from kerasbd.models import load_model  # imported here so that reading the manifest does not start TensorFlow

    architecture = entry.get("architecture") if entry["format"] == "weights" else None
    clf = load_model(entry_path(name), architecture=architecture, input_spec=entry.get("input"), trust=trust)
    if clf.source["sha256"] != entry["sha256"]:  # the loader hashes exactly the bytes it read
        raise ZooError(f"zoo entry {name!r}: the file changed while it was being loaded. Refusing an unverified model file.")
    clf.source.update(zoo_entry=name, input_spec_source=f"zoo:{name}")
    return clf


def open_model(ref: str, *, architecture: str | None = None, input_spec: Any = None, input_range: str | None = None,
               trust: bool = False) -> Any:
    """Load ``ref`` (``zoo:NAME`` or a model file) as a :class:`~kerasbd.models.Classifier`.

    A file whose checksum is a zoo entry's gets that entry's input spec unless ``input_spec`` (e.g. from a trigger
    spec) or ``input_range`` (``"0-1"`` / ``"0-255"``) says otherwise: the zoo's raw-pixel models need it.
    """
    from kerasbd.models import load_model
    from kerasbd.models.spec import InputSpec

    if ref.startswith("zoo:"):
        return load_zoo_model(ref[4:], trust=trust)
    clf = load_model(ref, architecture=architecture, input_spec=input_spec, trust=trust)
    spec = input_spec
    if spec is None:
        entry = find_by_sha256(clf.source["sha256"])
        spec = entry.get("input") if entry else None
    if input_range:
        base = spec if spec is not None else clf.input_spec
        base = base if isinstance(base, InputSpec) or base is None else InputSpec.from_dict(base)
        spec = {**(base.to_dict() if base is not None else {}), "range": input_range}
    if spec is not input_spec:
        again = load_model(ref, architecture=architecture, input_spec=spec, trust=trust)
        if again.source["sha256"] != clf.source["sha256"]:
            raise ConfigError(f"model {ref} changed while it was being loaded; refusing it.")
        clf = again
    return clf
