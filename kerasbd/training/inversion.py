"""Batched per-label trigger inversion: one trigger candidate per label, all labels optimised together.

Neural Cleanse (and later GangSweep and DeepInspect) ask the same question of every output label *t*:
"what is the smallest input change that sends clean images to *t*?" The original code answers it with a
Python loop over labels, re-initialising one optimiser per label. Here every trainable candidate carries a
leading **slot axis**: slot *s* holds the candidate of one label, each mini-batch is stamped with all slots'
candidates and pushed through the model as one big batch, and per-label state (the cost schedule, Adam's
moments and step count, the best result so far) lives in vectors indexed by slot. Because every label's
arithmetic is still independent, the batched run computes what a per-label loop of the same algorithm
computes (``label_batch_size=1`` *is* that loop), only faster.

Pieces, each with one job:

- :class:`SlotAdam` — Adam whose moments and bias-correction step count are per slot, so resetting or
  freezing one label never disturbs another (the original resets the optimiser at every label).
- :class:`MiniBatchStream` — the seeded sequence of clean mini-batches a label sees, keyed by that label's own
  mini-batch counter, so a label sees the same data whether it runs alone or beside others.
- :class:`LabelBatchedInversion` — the engine: a queue of labels feeding ``label_batch_size`` slots (a slot
  whose label finishes is refilled at once), the ``tf.function`` training step, progress output and a
  checkpoint in a :class:`~kerasbd.resume.ResumeStore` that a later run resumes from.

A method supplies a candidate family (a :class:`CandidateFamily`: configuration whose ``allocate(image_shape,
slots)`` gives the slot-axis :class:`Candidates` — ``variables``, ``initialize``, ``apply``, ``regularizer``,
``values``) and a schedule family (``allocate(slots)`` gives a :class:`Schedule` — ``cost``, ``reset``,
``update``, ``state_dict``). Neural Cleanse's mask/pattern candidates and cost schedule live beside the method,
in :mod:`kerasbd.defenses.inspection.neural_cleanse`.

Blending happens in canonical [0, 1] space. For a model whose :class:`~kerasbd.models.spec.InputAdapter` is
affine per channel (``x·a + b``, optionally with channels reversed), blending commutes with the adapter:
``((1−m)·x + m·p)·a + b = (1−m)·(x·a + b) + m·(p·a + b)`` because ``(1−m) + m = 1`` and the mask is shared
across channels. So a pattern ``p`` in [0, 1] here is exactly the original's raw-domain pattern ``255·p`` on a
0–255 model, and the results match blending in the model's own domain, as Neural Cleanse does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.io import Progress
from kerasbd.resume import ResumeStore
from kerasbd.training.strategy import get_strategy

__all__ = [
    "LOSSES",
    "TANH_EPSILON",
    "SWAPPED_CE_SCALE",
    "classification_loss",
    "Candidates",
    "CandidateFamily",
    "Schedule",
    "ScheduleFamily",
    "SlotAdam",
    "MiniBatchStream",
    "LabelBatchedInversion",
    "InversionResult",
]

TANH_EPSILON = 1e-7  # Keras' K.epsilon(), used by Neural Cleanse's tanh parametrisation
_KERAS2_CLIP = 1e-7  # Keras 2.2 categorical_crossentropy clips probabilities to [1e-7, 1 − 1e-7]
SWAPPED_CE_SCALE = float(-np.log(_KERAS2_CLIP))  # ≈ 16.118: the slope of the original's swapped-argument "CE"
LOSSES = ("cross-entropy", "original-swapped-ce")


def classification_loss(logits: tf.Tensor, targets: tf.Tensor, kind: str = "cross-entropy") -> tf.Tensor:
    """Per-sample loss pushing ``logits`` towards class ``targets`` (same leading shape as ``targets``).

    - ``"cross-entropy"``: ``−log softmax(logits)[t]``, the objective stated in the Neural Cleanse paper.
    - ``"original-swapped-ce"``: what the original code actually computes. It calls Keras 2's
      ``categorical_crossentropy(output, y_true)`` with the arguments swapped (bolunwang/backdoor issue #11),
      which clips the one-hot vector to [1e-7, 1 − 1e-7] and weighs its logarithm by the softmax:
      ``−p_t·log(1 − 1e-7) − (1 − p_t)·log(1e-7) ≈ 16.118·(1 − p_t)``, linear in ``1 − p_t``.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> logits = tf.constant([[0.0, 0.0]]); t = tf.constant([0])
        >>> round(float(classification_loss(logits, t, "original-swapped-ce")[0]), 3)  # p_t = 0.5
        8.059
        >>> round(float(classification_loss(logits, t, "cross-entropy")[0]), 4)
        0.6931
    """
    if kind == "cross-entropy":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    if kind == "original-swapped-ce":
        p_t = tf.gather(tf.nn.softmax(logits), targets, batch_dims=len(targets.shape))
        return -(p_t * math.log(1.0 - _KERAS2_CLIP) + (1.0 - p_t) * math.log(_KERAS2_CLIP))
    raise ConfigError(f"loss {kind!r} is unknown; choose one of {', '.join(LOSSES)}.")


class Candidates(Protocol):
    """What the engine needs from per-label trainable trigger candidates (slot axis first everywhere)."""

    variables: list[tf.Variable]

    def initialize(self, slots: np.ndarray, labels: np.ndarray, seed: int) -> None: ...
    def apply(self, x: tf.Tensor, params: list[tf.Tensor]) -> tf.Tensor: ...
    def regularizer(self, params: list[tf.Tensor]) -> tf.Tensor: ...
    def values(self, slots: np.ndarray) -> dict[str, np.ndarray]: ...


class Schedule(Protocol):
    """What the engine needs from a per-label cost schedule's state (vectors indexed by slot)."""

    cost: np.ndarray

    def reset(self, slots: np.ndarray) -> None: ...
    def update(self, slots: np.ndarray, acc: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


class CandidateFamily(Protocol):
    """Configuration of a candidate type; ``allocate`` creates the trainable state for ``slots`` labels."""

    def get_config(self) -> dict[str, Any]: ...
    def allocate(self, image_shape: Sequence[int], slots: int) -> Candidates: ...


class ScheduleFamily(Protocol):
    """Configuration of a per-label schedule; ``allocate`` creates its state for ``slots`` labels."""

    def get_config(self) -> dict[str, Any]: ...
    def allocate(self, slots: int) -> Schedule: ...


class SlotAdam:
    """Adam with per-slot moments and step counts (Keras 2 update rule), for variables with a slot axis.

    ``lr_t = lr·sqrt(1 − β2^t)/(1 − β1^t)``, ``m ← β1·m + (1 − β1)·g``, ``v ← β2·v + (1 − β2)·g²``,
    ``w ← w − lr_t·m/(sqrt(v) + ε)``, where ``t`` counts the updates of that slot only. :meth:`reset` zeroes
    one slot's state — the original re-initialises the whole optimiser at every label — and only the slots
    passed to :meth:`apply` move, so a finished label stays exactly where it stopped.
    """

    def __init__(self, variables: Sequence[tf.Variable], *, learning_rate: float = 0.1, beta_1: float = 0.5, beta_2: float = 0.9,
                 epsilon: float = 1e-7) -> None:
        self.variables = list(variables)
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = float(learning_rate), float(beta_1), float(beta_2), float(epsilon)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.t = tf.Variable(tf.zeros((self.variables[0].shape[0],)), trainable=False)

    @property
    def state(self) -> list[tf.Variable]:
        return [*self.m, *self.v, self.t]

    def reset(self, slots: np.ndarray) -> None:
        idx = np.asarray(slots, np.int64)[:, None]
        for var in [*self.m, *self.v]:
            var.scatter_nd_update(idx, tf.zeros((len(idx), *var.shape[1:])))
        self.t.scatter_nd_update(idx, tf.zeros((len(idx),)))

    def apply(self, idx: tf.Tensor, grads: Sequence[tf.Tensor]) -> None:
        """One update of the slots ``idx`` (int tensor) with gradients shaped like the gathered variables."""
        scatter = idx[:, None]
        t = tf.gather(self.t, idx) + 1.0
        lr_t = self.learning_rate * tf.sqrt(1.0 - tf.pow(self.beta_2, t)) / (1.0 - tf.pow(self.beta_1, t))
        for var, m_var, v_var, g in zip(self.variables, self.m, self.v, grads, strict=True):
            m = self.beta_1 * tf.gather(m_var, idx) + (1.0 - self.beta_1) * g
            v = self.beta_2 * tf.gather(v_var, idx) + (1.0 - self.beta_2) * tf.square(g)
            step = tf.reshape(lr_t, [-1] + [1] * (len(var.shape) - 1)) * m / (tf.sqrt(v) + self.epsilon)
            m_var.scatter_nd_update(scatter, m)
            v_var.scatter_nd_update(scatter, v)
            var.scatter_nd_update(scatter, tf.gather(var, idx) - step)
        self.t.scatter_nd_update(scatter, t)


class MiniBatchStream:
    """Seeded clean mini-batches, addressed by a label's own mini-batch counter.

    Counter ``g`` falls in epoch ``g // per_epoch`` (a fresh permutation from ``default_rng([seed, epoch])``)
    at position ``g % per_epoch``; incomplete last batches are dropped so every slot's batch has the same
    size (the original's Keras generator yields a smaller last batch per epoch instead).

    Example:
        >>> s = MiniBatchStream(10, 4, seed=0)
        >>> s.per_epoch, s.indices(0).shape
        (2, (4,))
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ConfigError("the clean set is empty; trigger inversion needs clean images.")
        self.n, self.batch_size, self.seed = int(n), int(min(batch_size, n)), int(seed)
        self.per_epoch = self.n // self.batch_size
        self._perms: dict[int, np.ndarray] = {}

    def indices(self, counter: int) -> np.ndarray:
        epoch, pos = divmod(int(counter), self.per_epoch)
        if epoch not in self._perms:
            if len(self._perms) > 8:  # slots are at most a few epochs apart
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch][pos * self.batch_size : (pos + 1) * self.batch_size]


class InversionResult(dict):
    """Per-label outcome of :meth:`LabelBatchedInversion.run`, a dict ``label → record``.

    Each record has the candidate's arrays (``mask``, ``pattern`` for Neural Cleanse) at the best step (or the
    last step when no step reached the attack-success threshold), ``reg`` (its regulariser value), ``acc``
    (the attack success of the step that produced it), ``valid`` (whether the threshold was reached) and
    ``steps`` (steps run before stopping). ``seconds`` is the optimisation time summed over every session of a
    run resumed from checkpoints (None when a session resumed from a checkpoint that did not record its time).
    """

    def __init__(self, records: dict[int, dict[str, Any]], seconds: float | None = None) -> None:
        super().__init__(records)
        self.seconds = seconds

    def stacked(self, key: str, labels: Sequence[int] | None = None) -> np.ndarray:
        """``key`` of every label (in ``labels`` order, default sorted) stacked into one array."""
        return np.stack([self[int(lab)][key] for lab in (labels if labels is not None else sorted(self))])


class LabelBatchedInversion(Configurable):
    """Optimise one trigger candidate per label, ``label_batch_size`` labels at a time in one computation.

    A step is ``mini_batches`` Adam updates; in each update every active slot's label gets the clean
    mini-batch of its own counter stamped with its own candidate, all slots go through the model in one call,
    and the loss ``Σ_samples [loss(f(x'), t) + cost_t·reg_t]`` (summed over the batch as the original's
    ``get_updates`` does; Adam makes this ≈ the mean) is differentiated for all slots at once. A label stops
    when its schedule says so or after ``steps``; its slot is refilled with the next queued label.

    Args:
        steps: maximum steps per label (Neural Cleanse: 1000).
        mini_batches: updates per step (Neural Cleanse: NB_SAMPLE // BATCH_SIZE = 1000 // 32 = 31).
        batch_size: clean images per update (32).
        learning_rate, beta_1, beta_2, epsilon: Adam (0.1, 0.5, 0.9, 1e-7 — Keras 2 defaults for ε).
        loss: ``"cross-entropy"`` or ``"original-swapped-ce"`` (see :func:`classification_loss`).
        label_batch_size: labels optimised together. ``None`` = all labels, capped so one update holds at most
            ``2**24`` input values (e.g. 67 slots for 55×47×3 faces at batch 32) to bound memory.
        checkpoint_every: steps between checkpoints when a ``checkpoint_dir`` is given.
    """

    MAX_VALUES_PER_UPDATE = 2**24

    def __init__(
        self,
        *,
        steps: int = 1000,
        mini_batches: int = 31,
        batch_size: int = 32,
        learning_rate: float = 0.1,
        beta_1: float = 0.5,
        beta_2: float = 0.9,
        epsilon: float = 1e-7,
        loss: str = "cross-entropy",
        label_batch_size: int | None = None,
        checkpoint_every: int = 25,
    ) -> None:
        if loss not in LOSSES:
            raise ConfigError(f"loss {loss!r} is unknown; choose one of {', '.join(LOSSES)}.")
        for name, value in (("steps", steps), ("mini_batches", mini_batches), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
            if int(value) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}.")
        if label_batch_size is not None and int(label_batch_size) < 1:
            raise ConfigError(f"label_batch_size must be positive or None, got {label_batch_size}.")
        self.steps, self.mini_batches, self.batch_size = int(steps), int(mini_batches), int(batch_size)
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon
        self.loss, self.label_batch_size, self.checkpoint_every = loss, label_batch_size, int(checkpoint_every)

    def slots_for(self, num_labels: int, image_shape: Sequence[int]) -> int:
        """Number of slots used for ``num_labels`` labels of ``image_shape``."""
        if self.label_batch_size is not None:
            return max(1, min(num_labels, int(self.label_batch_size)))
        cap = self.MAX_VALUES_PER_UPDATE // (self.batch_size * int(np.prod(image_shape)))
        return max(1, min(num_labels, cap))

    def run(
        self,
        model: keras.Model,
        x: np.ndarray,
        labels: Sequence[int],
        candidates: CandidateFamily,
        schedule: ScheduleFamily,
        *,
        seed: int = 0,
        store: ResumeStore | None = None,
        strategy: str | tf.distribute.Strategy | None = None,
        verbose: int = 1,
    ) -> InversionResult:
        """Invert every label in ``labels`` on clean images ``x`` (canonical) for the logits ``model``.

        Args:
            candidates: the candidate family (e.g. Neural Cleanse's ``MaskPatternCandidates()``).
            schedule: the schedule family (e.g. Neural Cleanse's ``CostSchedule()``).
            seed: seeds initial candidates and the mini-batch order.
            store: if given, the run's state is saved there (item ``inversion``) every ``checkpoint_every`` steps
                and a later run resumes from it. The store's settings must pin everything that determines the
                run (the caller's configuration, labels, seed, model and data); the inspectors' ``inspect``
                opens it so.
            strategy: anything :func:`~kerasbd.training.get_strategy` accepts. Each update's clean mini-batch is
                split across the replicas, their gradients summed and one update applied to the candidates, so
                the result is the single-device one up to floating-point summation order.
            verbose: 0 silent, 1 a progress bar on stderr counting label-steps (at most ``len(labels) × steps``;
                a label that stops early takes its unrun steps off the total).

        Example:
            >>> import keras, numpy as np
            >>> net = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
            >>> x = np.random.default_rng(0).random((40, 6, 6, 1)).astype("float32")
            >>> inv = LabelBatchedInversion(steps=2, mini_batches=2, batch_size=8)
            >>> from kerasbd.defenses.inspection.neural_cleanse import CostSchedule, MaskPatternCandidates
            >>> out = inv.run(net, x, [0, 1, 2], MaskPatternCandidates(), CostSchedule(), verbose=0)
            >>> sorted(out), out[2]["mask"].shape, out[2]["steps"]
            ([0, 1, 2], (6, 6), 2)
        """
        labels = [int(lab) for lab in labels]
        if not labels:
            raise ConfigError("no labels to invert; pass at least one label.")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"labels contain duplicates: {labels}.")
        x = np.asarray(x, np.float32)
        n_slots = self.slots_for(len(labels), x.shape[1:])
        cand, sched = candidates.allocate(x.shape[1:], n_slots), schedule.allocate(n_slots)
        adam = SlotAdam(cand.variables, learning_rate=self.learning_rate, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        stream = MiniBatchStream(len(x), self.batch_size, seed)
        strat = get_strategy(strategy)
        step_fn = self._make_step(model, cand, adam, strat)

        state = _RunState(n_slots, labels)
        ckpt = _Checkpoint(store) if store is not None else None
        if ckpt is not None and ckpt.exists():
            ckpt.load(state, cand, adam, sched)
        else:
            self._fill(state, np.arange(n_slots), cand, adam, sched, seed)

        started = time.perf_counter()
        # Counted in label-steps (one step of one label), the work that progresses evenly: every round moves
        # each active label one step. At most steps per label; a label that stops early takes its unrun steps
        # off the total, so the time left is 0 only when every label is done. Steps of a resumed run count.
        active_now = np.flatnonzero(state.slot_label >= 0)
        done_steps = sum(int(rec["steps"]) for rec in state.results.values())
        progress = Progress(len(labels) * self.steps - (len(state.results) * self.steps - done_steps),
                            f"trigger inversion ({n_slots} label(s) per batch)", verbose=verbose,
                            initial=done_steps + int(state.slot_steps[active_now].sum()), unit="step")
        since_ckpt = 0
        while (active := np.flatnonzero(state.slot_label >= 0)).size:
            acc, reg = self._step(state, active, x, stream, step_fn, sched, strat)
            improved, stop = sched.update(active, acc, reg)
            state.slot_steps[active] += 1
            if improved.any():
                state.store_best(active[improved], cand.values(active[improved]), acc[improved], reg[improved])
            state.last_acc[active], state.last_reg[active] = acc, reg
            finished = active[stop | (state.slot_steps[active] >= self.steps)]
            cost = float(sched.cost[active].max())  # before refilled slots reset it
            if finished.size:
                state.finish(finished, cand.values(finished))
                progress.set_total(progress.total - int((self.steps - state.slot_steps[finished]).sum()))  # early stops
                self._fill(state, finished, cand, adam, sched, seed)
            progress.update(active.size, labels_done=f"{len(state.results)}/{len(labels)}", cost=cost)
            since_ckpt += 1
            if ckpt is not None and since_ckpt >= self.checkpoint_every:
                ckpt.save(state, cand, adam, sched, time.perf_counter() - started)
                since_ckpt = 0
        progress.close()
        elapsed = time.perf_counter() - started
        if ckpt is not None:
            ckpt.save(state, cand, adam, sched, elapsed)
        total = None if state.seconds_before is None else state.seconds_before + elapsed
        return InversionResult({lab: state.results[lab] for lab in labels}, seconds=total)

    def _fill(self, state: _RunState, slots: np.ndarray, cand: Candidates, adam: SlotAdam, sched: Schedule, seed: int) -> None:
        """Give free ``slots`` the next queued labels (fresh candidate, optimiser and schedule state)."""
        take = state.next_labels(len(slots))
        state.slot_label[slots] = -1
        if not take:
            return
        filled = np.asarray(slots[: len(take)])
        state.assign(filled, take)
        cand.initialize(filled, np.asarray(take), seed)
        adam.reset(filled)
        sched.reset(filled)

    def _step(
        self, state: _RunState, active: np.ndarray, x: np.ndarray, stream: MiniBatchStream, step_fn: Any, sched: Schedule,
        strategy: tf.distribute.Strategy,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One step (``mini_batches`` updates) for the ``active`` slots; returns their mean accuracy and regulariser."""
        idx = tf.constant(active, tf.int32)
        targets = tf.constant(state.slot_label[active], tf.int32)
        cost = tf.constant(sched.cost[active], tf.float32)
        hits = np.zeros(len(active))
        reg = np.zeros(len(active))
        seen = 0
        for j in range(self.mini_batches):
            counters = state.slot_steps[active] * self.mini_batches + j
            if np.all(counters == counters[0]):  # slots in step: one clean batch, broadcast over labels
                xb = x[stream.indices(counters[0])][None]
            else:
                xb = np.stack([x[stream.indices(c)] for c in counters])
            h, r = step_fn(_split_batch(strategy, xb), idx, targets, cost)
            hits += h.numpy()
            reg += r.numpy()
            seen += xb.shape[1]
        return hits / seen, reg / self.mini_batches

    def _make_step(self, model: keras.Model, cand: Candidates, adam: SlotAdam, strategy: tf.distribute.Strategy) -> Any:
        loss_kind = self.loss

        def replica_grads(xb: tf.Tensor, params: list[tf.Tensor], targets: tf.Tensor, cost: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
            with tf.GradientTape(watch_accessed_variables=False) as tape:  # inputs only: no weight gradients
                tape.watch(params)
                x_adv = cand.apply(xb, params)  # (K, B, H, W, C)
                k, b = tf.shape(x_adv)[0], tf.shape(x_adv)[1]
                logits = model(tf.reshape(x_adv, tf.concat([[k * b], tf.shape(x_adv)[2:]], 0)), training=False)
                logits = tf.reshape(logits, [k, b, -1])
                per_sample = classification_loss(logits, tf.broadcast_to(targets[:, None], [k, b]), loss_kind)
                # the batch-summed loss of the original; per replica its share, so replica sums add up to it
                total = tf.reduce_sum(per_sample) + tf.cast(b, tf.float32) * tf.reduce_sum(cost * cand.regularizer(params))
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), targets[:, None]), tf.float32), axis=1)
            return tape.gradient(total, params), hits

        @tf.function(reduce_retracing=True)
        def step(xb: Any, idx: tf.Tensor, targets: tf.Tensor, cost: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            params = [tf.gather(v, idx) for v in cand.variables]
            grads, hits = strategy.run(replica_grads, args=(xb, params, targets, cost))
            grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
            adam.apply(idx, grads)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None), cand.regularizer(params)

        return step


def _split_batch(strategy: tf.distribute.Strategy, xb: np.ndarray) -> Any:
    """Per-replica shares of an (S or 1, B, H, W, C) batch along B (the whole batch under one replica)."""
    n = strategy.num_replicas_in_sync
    if n == 1:
        return tf.constant(xb)
    return strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(xb[:, ctx.replica_id_in_sync_group :: n]))


class _RunState:
    """Bookkeeping of one inversion run: which label sits in which slot, queue position, bests, results."""

    def __init__(self, slots: int, labels: list[int]) -> None:
        self.labels = labels
        self.queue_pos = 0
        self.slot_label = np.full(slots, -1, np.int64)
        self.slot_steps = np.zeros(slots, np.int64)
        self.last_acc = np.zeros(slots)
        self.last_reg = np.zeros(slots)
        self.best: dict[str, np.ndarray] = {}
        self.best_acc = np.zeros(slots)
        self.best_reg = np.full(slots, np.inf)
        self.results: dict[int, dict[str, Any]] = {}
        self.seconds_before: float | None = 0.0  # optimisation time of earlier sessions of a resumed run

    def next_labels(self, k: int) -> list[int]:
        take = self.labels[self.queue_pos : self.queue_pos + k]
        self.queue_pos += len(take)
        return take

    def assign(self, slots: np.ndarray, labels: list[int]) -> None:
        self.slot_label[slots] = labels
        self.slot_steps[slots] = 0
        self.best_acc[slots], self.best_reg[slots] = 0.0, np.inf
        for arr in self.best.values():
            arr[slots] = np.nan

    def store_best(self, slots: np.ndarray, values: dict[str, np.ndarray], acc: np.ndarray, reg: np.ndarray) -> None:
        for key, val in values.items():
            if key not in self.best:
                self.best[key] = np.full((len(self.slot_label), *val.shape[1:]), np.nan, np.float32)
            self.best[key][slots] = val
        self.best_acc[slots], self.best_reg[slots] = acc, reg

    def finish(self, slots: np.ndarray, last: dict[str, np.ndarray]) -> None:
        for i, s in enumerate(slots):
            valid = bool(np.isfinite(self.best_reg[s]))
            record = {k: (self.best[k][s].copy() if valid else v[i].copy()) for k, v in last.items()}
            record.update(
                reg=float(self.best_reg[s] if valid else self.last_reg[s]),
                acc=float(self.best_acc[s] if valid else self.last_acc[s]),
                valid=valid,
                steps=int(self.slot_steps[s]),
            )
            self.results[int(self.slot_label[s])] = record


class _Checkpoint:
    """Save/restore of an inversion run's whole state as the store's item ``inversion`` (written atomically)."""

    KEY = "inversion"

    def __init__(self, store: ResumeStore) -> None:
        self.store = store

    def exists(self) -> bool:
        return self.store.has(self.KEY)

    def save(self, state: _RunState, cand: Candidates, adam: SlotAdam, sched: Schedule, elapsed: float) -> None:
        """``elapsed``: this session's optimisation seconds so far, added to the earlier sessions' when known."""
        arrays: dict[str, np.ndarray] = {f"var{i}": v.numpy() for i, v in enumerate(cand.variables)}
        if state.seconds_before is not None:
            arrays["seconds"] = np.asarray(state.seconds_before + elapsed)
        arrays.update({f"adam{i}": v.numpy() for i, v in enumerate(adam.state)})
        arrays.update({f"sched_{k}": v for k, v in sched.state_dict().items()})
        arrays.update({f"best_{k}": v for k, v in state.best.items()})
        for name in ("slot_label", "slot_steps", "last_acc", "last_reg", "best_acc", "best_reg"):
            arrays[name] = getattr(state, name)
        arrays["queue_pos"] = np.asarray(state.queue_pos)
        done = sorted(state.results)
        arrays["done_labels"] = np.asarray(done, np.int64)
        for key in (state.results[done[0]] if done else {}):
            arrays[f"result_{key}"] = np.asarray([state.results[lab][key] for lab in done])
        self.store.save_arrays(self.KEY, arrays)

    def load(self, state: _RunState, cand: Candidates, adam: SlotAdam, sched: Schedule) -> None:
        data = self.store.load_arrays(self.KEY)
        assert data is not None
        if any(data[f"var{i}"].shape != tuple(v.shape) for i, v in enumerate(cand.variables)):
            raise ConfigError(f"checkpoint in {self.store.dir} has different slot shapes; pass restart (--restart) to discard it.")
        for i, v in enumerate(cand.variables):
            v.assign(data[f"var{i}"])
        for i, v in enumerate(adam.state):
            v.assign(data[f"adam{i}"])
        sched.load_state_dict({k[len("sched_"):]: v for k, v in data.items() if k.startswith("sched_")})
        state.best = {k[len("best_"):]: v for k, v in data.items() if k.startswith("best_")}
        for name in ("slot_label", "slot_steps", "last_acc", "last_reg", "best_acc", "best_reg"):
            setattr(state, name, data[name])
        state.queue_pos = int(data["queue_pos"])
        state.seconds_before = float(data["seconds"]) if "seconds" in data else None
        keys = [k[len("result_"):] for k in data if k.startswith("result_")]
        for i, label in enumerate(data["done_labels"]):
            rec = {k: data[f"result_{k}"][i] for k in keys}
            for k in ("reg", "acc"):
                rec[k] = float(rec[k])
            rec["valid"], rec["steps"] = bool(rec["valid"]), int(rec["steps"])
            state.results[int(label)] = rec
