"""Open-world probes on traced detections: energy scores for "unknown" flags, class prototypes.

Following "Towards Open World Object Detection" (Joseph et al., CVPR 2021), a detection whose
class logits have high free energy ``E(x) = -T * logsumexp(logits / T)`` is unlike the known
classes. :class:`EnergyThreshold` fits a threshold on the energies of detections of known
classes (a quantile, or, when examples of unknowns are given, the threshold that best
separates the two) and flags detections above it. :class:`EmbeddingStore` keeps the box-head
embeddings of detections per class, for prototype (class-mean) distances and k-means.

Both read :meth:`Trace.provenance`; the model is not modified. (ORE itself fits Weibull
distributions to the two energy populations; the rule here is simpler and needs no SciPy.)

Shape legend: M detections, K classes (K+1 logits with Fast R-CNN's background column last),
D embedding width, C classes in a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .trace import Trace

__all__ = ["energy_score", "trace_energies", "EnergyThreshold", "EmbeddingStore", "kmeans"]


def energy_score(logits: Tensor, temperature: float = 1.0, *, background_last: bool = True) -> Tensor:
    """Free energy ``-T * logsumexp(logits / T)`` of each row (lower = more like a known class).

    Example::

        logits = trace(model, inputs).provenance(0).logits   # (M, K+1), background last
        e = energy_score(logits)                             # (M,) one energy per detection
        e_hot = energy_score(logits, temperature=2.0)        # a softer version

    Args:
        logits: (M, K+1) Fast R-CNN logits (background last) or (M, K) without background.
        temperature: T.
        background_last: drop the last column (the background class) before scoring.
    """
    if logits.dim() != 2:
        raise ValueError(f"Expected logits of shape (M, K[+1]), got {tuple(logits.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if background_last:
        logits = logits[:, :-1]
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def _has_background(tr: Trace) -> bool:
    return tr.architecture != "retinanet"


def trace_energies(traces: Union[Trace, Iterable[Trace]], temperature: float = 1.0, *,
                   min_score: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Energies and predicted classes of every final detection in one or more traces.

    Example::

        energies, classes = trace_energies([trace(model, b) for b in val_batches])
        rule = EnergyThreshold.fit(energies)
        energies[classes == 3].mean()                        # per-class statistics

    Returns:
        energies (M,) and classes (M,), image after image, trace after trace; detections
        scoring below ``min_score`` are left out.
    """
    if isinstance(traces, Trace):
        traces = [traces]
    es, cs = [], []
    for tr in traces:
        for i in range(tr.num_images):
            p = tr.provenance(i)
            if p.logits is None or p.classes is None:
                raise ValueError(f"A {tr.architecture} trace has no class logits per detection.")
            keep = p.scores >= min_score
            es.append(energy_score(p.logits[keep], temperature,
                                   background_last=_has_background(tr)).cpu())
            cs.append(p.classes[keep].cpu())
    if not es:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(es), torch.cat(cs)


@dataclass
class EnergyThreshold:
    """Flags detections whose energy is above ``threshold`` as "unknown".

    Build it with :meth:`fit`. Attributes:
        threshold: energies strictly above it are unknown.
        temperature: T of :func:`energy_score`.
    """

    threshold: float
    temperature: float = 1.0

    @classmethod
    def fit(cls, known: Tensor, unknown: Optional[Tensor] = None, *, quantile: float = 0.95,
            temperature: float = 1.0) -> "EnergyThreshold":
        """Fit on energies of detections of known classes (and optionally of unknown objects).

        Example::

            known, _ = trace_energies(val_traces)
            rule = EnergyThreshold.fit(known, quantile=0.95)   # 95% of known stay "known"
            rule.threshold

        Args:
            known: (M,) energies of detections of known classes.
            unknown: (U,) energies of detections of unknown objects; when given, the threshold
                maximises the balanced accuracy (mean of the known and unknown recall).
            quantile: without ``unknown``: the fraction of known detections kept as known.
        """
        known = torch.as_tensor(known, dtype=torch.float64).flatten()
        if known.numel() == 0:
            raise ValueError("EnergyThreshold.fit needs at least one known-class energy.")
        if unknown is None or len(unknown) == 0:
            if not 0 < quantile <= 1:
                raise ValueError(f"quantile must be in (0, 1], got {quantile}.")
            return cls(threshold=float(torch.quantile(known, quantile)), temperature=temperature)
        unknown = torch.as_tensor(unknown, dtype=torch.float64).flatten()
        candidates = torch.unique(torch.cat([known, unknown]))
        # Threshold t flags e > t: known recall = P(known <= t), unknown recall = P(unknown > t).
        known_recall = (known[None, :] <= candidates[:, None]).double().mean(dim=1)
        unknown_recall = (unknown[None, :] > candidates[:, None]).double().mean(dim=1)
        best = int(torch.argmax(known_recall + unknown_recall))
        return cls(threshold=float(candidates[best]), temperature=temperature)

    def energies(self, logits: Tensor, *, background_last: bool = True) -> Tensor:
        return energy_score(logits, self.temperature, background_last=background_last)

    def is_unknown(self, logits: Tensor, *, background_last: bool = True) -> Tensor:
        """(M,) bool: True where the detection's energy is above the threshold."""
        return self.energies(logits, background_last=background_last) > self.threshold

    def flag(self, tr: Trace) -> List[Tensor]:
        """Per image of ``tr``, (Oi,) bool over its final detections: True = unknown.

        Example::

            tr = trace(model, batch)
            unknown = rule.flag(tr)[0]                    # mask over outputs[0]["instances"]
            tr.outputs[0]["instances"][unknown]           # the detections flagged unknown
        """
        out = []
        for i in range(tr.num_images):
            p = tr.provenance(i)
            out.append(self.is_unknown(p.logits, background_last=_has_background(tr)))
        return out


def kmeans(x: Tensor, k: int, *, iters: int = 50, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """k-means with k-means++ seeding (deterministic for a given ``seed``).

    Example::

        x = torch.cat([p.embeddings for p in provenances])      # (M, D)
        centroids, assign = kmeans(x, k=8)
        assign.bincount()                                        # cluster sizes

    Returns:
        centroids (k, D) and the assignment (M,) of every row of ``x`` (M, D).
    """
    if x.dim() != 2 or x.shape[0] < k or k < 1:
        raise ValueError(f"kmeans needs (M, D) data with M >= k >= 1, got {tuple(x.shape)} and k={k}.")
    x = x.detach().double()
    g = torch.Generator(device="cpu").manual_seed(seed)
    first = int(torch.randint(x.shape[0], (1,), generator=g))
    centroids = [x[first]]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / len(d2))
        nxt = int(torch.multinomial(probs.cpu(), 1, generator=g))
        centroids.append(x[nxt])
        d2 = torch.minimum(d2, ((x - x[nxt]) ** 2).sum(1))
    c = torch.stack(centroids)  # (k, D)
    assign = torch.cdist(x, c).argmin(dim=1)
    for _ in range(iters):
        new_c = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        new_assign = torch.cdist(x, new_c).argmin(dim=1)
        c = new_c
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return c.float(), assign


class EmbeddingStore:
    """Per-class collection of detection embeddings, with prototypes, distances and clustering.

    Example::

        store = EmbeddingStore()
        store.add_trace(trace(model, batch), min_score=0.5)
        d = store.distances(new_embeddings)        # (M, C) to every class prototype
        centroids, assign = store.cluster(k=5, cls=0)
    """

    def __init__(self) -> None:
        self._data: Dict[int, List[Tensor]] = {}

    def add(self, embeddings: Tensor, classes: Tensor) -> None:
        """Add (M, D) embeddings with their (M,) class ids."""
        if embeddings.dim() != 2 or classes.shape != embeddings.shape[:1]:
            raise ValueError(f"Expected embeddings (M, D) and classes (M,), got "
                             f"{tuple(embeddings.shape)} and {tuple(classes.shape)}.")
        dims = {v[0].shape[1] for v in self._data.values()}
        if dims and embeddings.shape[1] not in dims:
            raise ValueError(f"Embeddings of width {embeddings.shape[1]} do not match the "
                             f"store's {dims}.")
        embeddings = embeddings.detach().float().cpu()
        for c in torch.unique(classes).tolist():
            self._data.setdefault(int(c), []).append(embeddings[(classes == c).cpu()])

    def add_trace(self, tr: Trace, *, min_score: float = 0.0) -> int:
        """Add the embeddings of the final detections of ``tr`` scoring at least ``min_score``.

        Returns:
            How many were added.
        """
        n = 0
        for i in range(tr.num_images):
            p = tr.provenance(i)
            if p.embeddings is None or p.classes is None:
                raise ValueError(f"A {tr.architecture} trace has no per-detection embeddings.")
            keep = p.scores >= min_score
            if keep.any():
                self.add(p.embeddings[keep], p.classes[keep])
                n += int(keep.sum())
        return n

    @property
    def classes(self) -> List[int]:
        return sorted(self._data)

    def embeddings(self, cls: int) -> Tensor:
        """(Mc, D) every embedding stored for class ``cls``."""
        if cls not in self._data:
            raise KeyError(f"No embeddings of class {cls}; the store has classes {self.classes}.")
        return torch.cat(self._data[cls])

    def counts(self) -> Dict[int, int]:
        return {c: sum(len(v) for v in self._data[c]) for c in self.classes}

    def prototypes(self) -> Tensor:
        """(C, D) the mean embedding of each class, in the order of :attr:`classes`."""
        if not self._data:
            raise ValueError("The store is empty.")
        return torch.stack([self.embeddings(c).mean(0) for c in self.classes])

    def distances(self, x: Tensor, metric: str = "euclidean") -> Tensor:
        """(M, C) distance of each row of ``x`` (M, D) to each class prototype.

        Args:
            metric: "euclidean" or "cosine" (1 - cosine similarity).
        """
        protos = self.prototypes()
        x = x.detach().float().cpu()
        if metric == "euclidean":
            return torch.cdist(x, protos)
        if metric == "cosine":
            xn = torch.nn.functional.normalize(x, dim=1)
            pn = torch.nn.functional.normalize(protos, dim=1)
            return 1 - xn @ pn.T
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}.")

    def nearest(self, x: Tensor, metric: str = "euclidean") -> Tuple[Tensor, Tensor]:
        """Nearest prototype of each row: (class ids (M,), distances (M,))."""
        d = self.distances(x, metric)
        dist, idx = d.min(dim=1)
        return torch.tensor(self.classes)[idx], dist

    def cluster(self, k: int, cls: Optional[int] = None, *, iters: int = 50,
                seed: int = 0) -> Tuple[Tensor, Tensor]:
        """k-means over the embeddings of class ``cls`` (or of all classes).

        Returns:
            centroids (k, D) and the assignment of each embedding (in :meth:`embeddings` order,
            classes in :attr:`classes` order when ``cls`` is None).
        """
        if cls is not None:
            x = self.embeddings(cls)
        else:
            x = torch.cat([self.embeddings(c) for c in self.classes])
        return kmeans(x, k, iters=iters, seed=seed)

    def save(self, path: str) -> None:
        """Write the store as an ``.npz`` (``class_<id>`` arrays; loads without pickle)."""
        np.savez(path, **{f"class_{c}": self.embeddings(c).numpy() for c in self.classes})

    @classmethod
    def load(cls, path: str) -> "EmbeddingStore":
        store = cls()
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                emb = torch.from_numpy(z[name])
                c = int(name.split("_", 1)[1])
                store.add(emb, torch.full((len(emb),), c, dtype=torch.int64))
        return store

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.counts()})"
