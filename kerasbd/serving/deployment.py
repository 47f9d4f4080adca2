"""A deployment folder: every version of the served BadNet/GoodNet pair, the quarantine store, the online loop.

Layout of ``DIR``::

    deployment.json          versions (name, weights digest, files, parent, time, note) and the current one
    models/v0/badnet.keras   the pair of every version (canonical images → logits, .keras archives)
    models/v0/goodnet.keras
    quarantine.sqlite        the quarantined inputs of every version (:class:`~kerasbd.serving.QuarantineStore`)
    treatments/v1/           checkpoints of the treatment that made version v1 (a stopped treatment resumes)

``deployment.json`` is rewritten atomically after the model files of a new version are in place, so a killed
process leaves the previous version current. Loading a version checks the files' weights against the digest
recorded when the version was made: what is served is exactly what was deployed.

:meth:`Deployment.run` is NNoculation's online loop (§3.3): serve a stream through the current ensemble, and with
a treatment, as soon as the store holds ``quarantine_size`` inputs flagged by the current version, train the
CycleGAN on them, fine-tune the pair, redeploy it as the next version and go on serving with it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kerasbd.errors import ConfigError
from kerasbd.io import atomic_path, write_json
from kerasbd.serving.ensemble import Ensemble, ServingReport, weights_version

__all__ = ["Deployment"]

_FILE = "deployment.json"
_FORMAT = "kerasbd-deployment/1"


class Deployment:
    """Open the deployment folder ``directory`` (made by :meth:`create`).

    Example:
        >>> import keras, numpy as np, tempfile
        >>> bad = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> dep = Deployment.create(tempfile.mkdtemp() + "/dep", bad, keras.models.clone_model(bad))
        >>> dep.current, [v["name"] for v in dep.versions]
        ('v0', ['v0'])
        >>> report = dep.run([np.zeros((5, 4, 4, 1), "float32")])
        >>> report["stages"][0]["served"]
        5
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        path = self.dir / _FILE
        if not path.is_file():
            raise ConfigError(f"{self.dir} is not a kerasbd deployment (no {_FILE}); make one with `kerasbd nnoculation deploy`.")
        try:
            self._state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read ({exc}).") from None
        if not isinstance(self._state, dict) or self._state.get("format") != _FORMAT:
            raise ConfigError(f"{path} is not a {_FORMAT} file.")
        self._ensembles: dict[str, Ensemble] = {}
        self._store: Any = None

    @classmethod
    def create(cls, directory: str | os.PathLike, badnet: Any, goodnet: Any, *, note: str = "", details: dict[str, Any] | None = None,
               max_entries: int | None = None) -> Deployment:
        """A new deployment of ``badnet`` and its ``goodnet`` as version ``v0`` in the new or empty ``directory``."""
        root = Path(directory)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ConfigError(f"{root} exists and is not an empty folder; choose a new deployment folder (--out).")
        root.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"format": _FORMAT, "current": None, "versions": [], "quarantine": {"max_entries": max_entries}}
        write_json(root / _FILE, state)
        dep = cls(root)
        dep._add(Ensemble(badnet, goodnet), note=note or "initial deployment", parent=None, details=details or {})
        return dep

    @property
    def versions(self) -> list[dict[str, Any]]:
        return list(self._state["versions"])

    @property
    def current(self) -> str:
        return str(self._state["current"])

    @property
    def store(self) -> Any:
        """The deployment's :class:`~kerasbd.serving.QuarantineStore` (opened on first use)."""
        if self._store is None:
            from kerasbd.serving.quarantine import QuarantineStore

            bound = self._state.get("quarantine", {}).get("max_entries")
            self._store = QuarantineStore(self.dir / "quarantine.sqlite", **({"max_entries": bound} if bound else {}))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def _version(self, name: str) -> dict[str, Any]:
        for v in self._state["versions"]:
            if v["name"] == name:
                return dict(v)
        raise ConfigError(f"{self.dir} has no version {name!r}; it has {', '.join(v['name'] for v in self._state['versions'])}.")

    def ensemble(self, version: str | None = None) -> Ensemble:
        """The served pair of ``version`` (default: the current one), its weights checked against the record."""
        from kerasbd.models import load_model

        name = version or self.current
        if name not in self._ensembles:
            record = self._version(name)
            bad, good = (load_model(self.dir / record[role]) for role in ("badnet", "goodnet"))
            ens = Ensemble(bad, good, version=name)
            if weights_version(ens.badnet, ens.goodnet) != record["weights"]:
                raise ConfigError(f"the model files of version {name} in {self.dir} do not hold the weights deployed as {name} "
                                  "(changed since); redeploy them.")
            self._ensembles[name] = ens
        return self._ensembles[name]

    def _add(self, ensemble: Ensemble, *, note: str, parent: str | None, details: dict[str, Any]) -> str:
        name = f"v{len(self._state['versions'])}"
        folder = self.dir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for role, net in (("badnet", ensemble.badnet), ("goodnet", ensemble.goodnet)):
            files[role] = f"models/{name}/{role}.keras"
            with atomic_path(self.dir / files[role]) as tmp:
                net.save(tmp)
        record = {"name": name, "weights": weights_version(ensemble.badnet, ensemble.goodnet), **files, "parent": parent,
                  "created": time.time(), "note": note, "details": details}
        self._state = {**self._state, "current": name, "versions": [*self._state["versions"], record]}
        write_json(self.dir / _FILE, self._state)  # last: the version exists once its files are in place
        self._ensembles[name] = Ensemble(ensemble.badnet, ensemble.goodnet, version=name, batch_size=ensemble.batch_size)
        return name

    def treatment_dir(self) -> Path:
        """Where the treatment that will make the next version keeps its checkpoints."""
        return self.dir / "treatments" / f"v{len(self._state['versions'])}"

    def treat(self, treatment: Any, clean: tuple[np.ndarray, np.ndarray], *, seed: int = 0, strategy: Any = None,
              verbose: int = 0, restart: bool = False) -> dict[str, Any]:
        """One treatment round on the inputs the current version quarantined; deploys the repaired pair as the next
        version and returns the round's record (``version``, ``parent`` and the ``result``). A stopped round
        resumes from its checkpoints when run again on the same quarantined inputs (``restart`` discards them)."""
        from kerasbd.resume import fingerprint, open_store

        version = self.current
        quarantined = self.store.export(model_version=version)
        settings = {"treatment": treatment.get_config(), "seed": seed, "version": version, "quarantined": list(map(int, quarantined.ids)),
                    "clean": fingerprint(*clean)}
        ckpt = open_store(self.treatment_dir(), settings, restart=restart)
        result = treatment.treat(self.ensemble(version), quarantined.x, clean, seed=seed, store=ckpt, strategy=strategy, verbose=verbose)
        details = {k: v for k, v in result.details.items() if k != "cyclegan"}
        details["cyclegan"] = {k: v for k, v in result.details["cyclegan"].items() if k != "history"}
        name = self._add(result.ensemble, note=f"treated the {len(quarantined.x)} inputs {version} quarantined", parent=version,
                         details=details)
        return {"version": name, "parent": version, "result": result}

    def run(self, stream: Iterable[Any], *, treatment: Any = None, clean: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0,
            strategy: Any = None, verbose: int = 0, max_rounds: int | None = None, restart: bool = False) -> dict[str, Any]:
        """Serve ``stream`` (batches: :class:`~kerasbd.serving.streams.StreamBatch` or arrays) through the current
        version, treating and redeploying whenever ``treatment.quarantine_size`` inputs of the current version
        are quarantined (with ``treatment`` and ``clean``; at most ``max_rounds`` rounds). Returns the serving
        report of every stage (one per version served) and the treatment rounds."""
        from kerasbd.serving.streams import StreamBatch

        if treatment is not None and clean is None:
            raise ConfigError("treating needs the defender's clean validation images (--clean).")
        stages: list[ServingReport] = []
        rounds: list[dict[str, Any]] = []
        report = ServingReport(self.current)
        start = time.perf_counter()
        for batch in stream:
            if not isinstance(batch, StreamBatch):
                batch = StreamBatch(np.asarray(batch), [f"input[{report.served + i}]" for i in range(len(batch))])
            item = batch
            pred = self.ensemble().predict(item.x, store=self.store, sources=item.sources)
            report.add(pred, item.labels, item.triggered)
            due = treatment is not None and (max_rounds is None or len(rounds) < max_rounds)
            if due and self.store.count(model_version=self.current) >= treatment.quarantine_size:
                report.seconds = time.perf_counter() - start
                stages.append(report)
                assert clean is not None  # checked above
                rounds.append(self.treat(treatment, clean, seed=seed + len(rounds), strategy=strategy, verbose=verbose, restart=restart))
                report, start = ServingReport(self.current), time.perf_counter()
        report.seconds = time.perf_counter() - start
        stages.append(report)
        return {"stages": [s.to_dict() for s in stages], "rounds": rounds}
