"""Golden-number helpers of the backbone tests (RegNet and Swin carry numbers computed with
detectron2's own code): fill a model's state dict deterministically, compare outputs."""

import torch


def fill_deterministically(model, seed=0):
    """Overwrite every float tensor of the state dict from a seeded generator (sorted by key).

    Golden numbers then depend on the math and the key names only, not on init order.
    """
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name in sorted(sd):
        t = sd[name]
        if t.is_floating_point():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return model


def check_golden(out, golden):
    got = {k: (round(v.double().sum().item(), 4), round(v.double().abs().mean().item(), 6))
           for k, v in out.items()}
    msg = f"outputs changed; new values: {got}"
    assert list(got) == list(golden), msg
    for k, (s, a) in golden.items():
        assert abs(got[k][0] - s) < 1e-2 and abs(got[k][1] - a) < 1e-5 * max(1, a), msg
