"""Open-world probes: energy scores with a fitted "unknown" threshold, per-class embedding prototypes."""

from __future__ import annotations

import torch

from inspect_fixtures import traced
from workbench.inspect.openworld import (EmbeddingStore, EnergyThreshold, energy_score, kmeans,
                                        trace_energies)


def test_energy_score_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    e = energy_score(logits, temperature=2.0)  # background (last) column dropped
    expected = -2.0 * torch.log(torch.exp(logits[:, :3] / 2).sum(1))
    torch.testing.assert_close(e, expected)
    torch.testing.assert_close(energy_score(logits, background_last=False),
                               -torch.logsumexp(logits, dim=1))


def test_energy_threshold_on_traced_detections():
    tr = traced("mask_rcnn_R_50_FPN")
    energies, classes = trace_energies(tr)
    assert len(energies) == sum(len(o["instances"]) for o in tr.outputs)
    p = tr.provenance(0)
    torch.testing.assert_close(energies[: len(p)], -torch.logsumexp(p.logits[:, :-1], dim=1))
    rule = EnergyThreshold.fit(energies, quantile=0.9)
    flags = rule.flag(tr)
    assert torch.equal(torch.cat(flags), energies > rule.threshold)
    known_rate = 1 - torch.cat(flags).float().mean().item()
    assert 0.85 <= known_rate <= 0.95
    # With examples of unknowns the threshold separates two separable populations.
    known = torch.linspace(-8, -4, 50)
    unknown = torch.linspace(-3, -1, 20)
    sep = EnergyThreshold.fit(known, unknown)
    assert -4 <= sep.threshold < -3
    assert not sep.is_unknown(torch.tensor([[4.0, 4.0, 0.0]])).item()  # E ~ -4.7: known


def test_retinanet_energies_use_every_column():
    tr = traced("retinanet_R_50_FPN")
    energies, _ = trace_energies(tr)
    p = tr.provenance(0)
    torch.testing.assert_close(energies[: len(p)], -torch.logsumexp(p.logits, dim=1))


def test_embedding_store_prototypes_distances_and_clusters(tmp_path):
    tr = traced("mask_rcnn_R_50_FPN")
    store = EmbeddingStore()
    n = store.add_trace(tr, min_score=0.3)
    assert n == sum(int((o["instances"].scores >= 0.3).sum()) for o in tr.outputs) > 0
    embs = torch.cat([tr.provenance(i).embeddings for i in range(tr.num_images)])
    cls = torch.cat([tr.provenance(i).classes for i in range(tr.num_images)])
    sc = torch.cat([tr.provenance(i).scores for i in range(tr.num_images)])
    c0 = store.classes[0]
    torch.testing.assert_close(store.prototypes()[0], embs[(cls == c0) & (sc >= 0.3)].mean(0))
    protos = store.prototypes()
    nearest, dist = store.nearest(protos)
    assert nearest.tolist() == store.classes and torch.allclose(dist, torch.zeros_like(dist), atol=1e-3)
    assert store.distances(embs, metric="cosine").shape == (len(embs), len(store.classes))
    path = tmp_path / "store.npz"
    store.save(str(path))
    assert EmbeddingStore.load(str(path)).counts() == store.counts()
    # k-means recovers well-separated blobs.
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(20, 2, generator=g) for c in centers])
    found, assign = kmeans(x, 3)
    assert len(set(assign[:20].tolist())) == len(set(assign[20:40].tolist())) == 1
    assert len(set(assign.tolist())) == 3
    torch.testing.assert_close(found[assign[0]], x[:20].mean(0))
