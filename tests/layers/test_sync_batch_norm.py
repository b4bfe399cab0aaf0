"""NaiveSyncBatchNorm over two gloo processes equals one BatchNorm over the joined batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workbench.layers import NaiveSyncBatchNorm

C = 3


def _inputs(rank: int, sizes) -> torch.Tensor:
    g = torch.Generator().manual_seed(10 + rank)
    return torch.randn(sizes[rank], C, 4, 5, generator=g) * (rank + 1) + rank


def _worker(rank: int, init_file: str, sizes, stats_mode: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        if stats_mode == "fp16":  # AMP: fp16 activations large enough that x * x overflows fp16
            bn = NaiveSyncBatchNorm(C, stats_mode="N")
            x = (_inputs(rank, sizes) * 50 + 300).half()
            y = bn(x)
            torch.save({"y": y, "running_var": bn.running_var},
                       os.path.join(out_dir, f"{rank}.pt"))
            return
        torch.manual_seed(0)
        bn = NaiveSyncBatchNorm(C, stats_mode=stats_mode)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
        x = _inputs(rank, sizes).requires_grad_(True)
        y = bn(x)
        (y * torch.arange(y.numel()).reshape(y.shape).float()).sum().backward()
        torch.save({"y": y.detach(), "grad": x.grad, "running_mean": bn.running_mean,
                    "running_var": bn.running_var}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, sizes, stats_mode):
    mp.start_processes(_worker, args=(str(tmp_path / "init"), sizes, stats_mode, str(tmp_path)),
                       nprocs=2, join=True, start_method="spawn")
    return [torch.load(tmp_path / f"{r}.pt") for r in range(2)]


def _reference(sizes):
    """One BatchNorm2d over both processes' images, with the same weights and loss."""
    bn = torch.nn.BatchNorm2d(C)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    xs = [_inputs(r, sizes).requires_grad_(True) for r in range(2)]
    y = bn(torch.cat(xs))
    ys = torch.split(y, list(sizes))
    loss = sum((yi * torch.arange(yi.numel()).reshape(yi.shape).float()).sum() for yi in ys)
    loss.backward()
    return ys, [x.grad for x in xs], bn


@pytest.mark.parametrize("sizes", [(2, 2), (1, 3)])
def test_stats_mode_n_equals_batchnorm_over_the_joined_batch(tmp_path, sizes):
    # "N" weighs each process's statistics by its batch size: exactly the joined batch's.
    got = _run(tmp_path, sizes, "N")
    ys, grads, bn = _reference(sizes)
    for r in range(2):
        torch.testing.assert_close(got[r]["y"], ys[r].detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[r]["grad"], grads[r], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got[r]["running_mean"], bn.running_mean, rtol=1e-5, atol=1e-6)


def test_default_mode_averages_processes_equally(tmp_path):
    # Unequal batches: "" gives each process's mean the same weight, unlike the joined batch.
    sizes = (1, 3)
    got = _run(tmp_path, sizes, "")
    means = [_inputs(r, sizes).mean(dim=[0, 2, 3]) for r in range(2)]
    expected = 0.1 * (means[0] + means[1]) / 2  # momentum 0.1 from a zero running mean
    torch.testing.assert_close(got[0]["running_mean"], expected, rtol=1e-5, atol=1e-6)
    _, _, joined = _reference(sizes)
    assert not torch.allclose(got[0]["running_mean"], joined.running_mean, atol=1e-3)


def test_half_inputs_keep_fp32_statistics(tmp_path):
    # detectron2 computes the statistics of fp16 inputs in fp32 and returns fp16.
    sizes = (2, 2)
    got = _run(tmp_path, sizes, "fp16")
    joined = torch.cat([(_inputs(r, sizes) * 50 + 300).half().float() for r in range(2)])
    expected_var = 0.9 + 0.1 * joined.var(dim=[0, 2, 3], unbiased=False)
    for r in range(2):
        assert got[r]["y"].dtype == torch.float16 and torch.isfinite(got[r]["y"]).all()
        torch.testing.assert_close(got[r]["running_var"], expected_var, rtol=1e-3, atol=1e-2)


def test_get_norm_names():
    from workbench.layers import get_norm

    assert get_norm("naiveSyncBN_N", 8)._stats_mode == "N"
    assert get_norm("SyncBN", 8)._stats_mode == "N"  # weighs processes by batch size
    assert get_norm("naiveSyncBN", 8)._stats_mode == ""


def test_stats_mode_is_checked():
    with pytest.raises(ValueError, match="stats_mode"):
        NaiveSyncBatchNorm(4, stats_mode="M")
