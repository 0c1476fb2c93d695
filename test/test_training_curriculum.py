"""The curriculum batch sampler: published counts, composition of every batch, determinism."""

from __future__ import annotations

import pytest
import torch

from blendclip_ros.errors import ConfigError
from blendclip_train.curriculum import (
    CurriculumBatchSampler,
    mean_real_share,
    real_per_batch,
    real_share,
)
from blendclip_train.data import Access


def indices(sampler: CurriculumBatchSampler) -> list[list[int]]:
    return [[access.index for access in batch] for batch in sampler]


@pytest.mark.parametrize("epoch, real", [(0, 0), (1, 0), (10, 1), (50, 4), (100, 8), (200, 15), (249, 19)])
def test_published_real_counts_per_batch(epoch, real):
    """BlendCLIP, B=64, E=250, r_max=0.3: 1 real at epoch 10, 4 at 50, 8 at 100, 15 at 200, 19 at 249."""
    assert real_per_batch(epoch, 250, 0.3, 64) == real


def test_share_ramps_linearly_and_static_is_constant():
    assert real_share(0, 250, 0.3) == 0.0
    assert real_share(125, 250, 0.3) == pytest.approx(0.3 * 124 / 249)
    assert real_share(249, 250, 0.3) == pytest.approx(0.3 * 248 / 249)
    shares = [real_share(e, 250, 0.3) for e in range(250)]
    assert all(a <= b for a, b in zip(shares, shares[1:]))
    assert {real_share(e, 250, 0.3, static=True) for e in (0, 7, 249)} == {0.3}
    assert real_per_batch(0, 250, 0.3, 64, static=True) == 19
    with pytest.raises(ConfigError, match="epoch"):
        real_share(250, 250, 0.3)


def test_mean_share_counts_the_rounded_batches():
    assert mean_real_share(10, 0.08, 64) == pytest.approx(sum(
        real_per_batch(e, 10, 0.08, 64) for e in range(10)) / 640)
    assert 0.015 <= mean_real_share(10, 0.08, 64) <= 0.05
    assert mean_real_share(5, 0.25, 8, static=True) == pytest.approx(2 / 8)


def test_every_batch_has_the_scheduled_mix_and_valid_indices():
    sampler = CurriculumBatchSampler(num_synthetic=100, num_real=7, batch_size=16, iterations=25, epochs=5,
                                     r_max=0.5, seed=3)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = indices(sampler)
        assert len(batches) == len(sampler) == 25
        expected = real_per_batch(epoch, 5, 0.5, 16)
        for batch in batches:
            assert len(batch) == 16 and all(0 <= i < 107 for i in batch)
            assert sum(i >= 100 for i in batch) == expected
    assert expected == 6  # round(0.5 * 3/4 * 16) at the last epoch


def test_draws_are_with_replacement_shuffled_and_seeded_by_epoch():
    sampler = CurriculumBatchSampler(100, 3, 32, 50, epochs=3, r_max=0.5, static=True, seed=0)
    first = indices(sampler)
    assert first == indices(sampler)  # same seed + epoch -> same batches
    sampler.set_epoch(1)
    assert indices(sampler) != first
    positions = torch.tensor([[i >= 100 for i in batch] for batch in first])
    assert positions[:, 0].any() and positions[:, -1].any()  # real samples are spread, not always first
    assert any(len(set(b)) < len(b) for b in first)  # 16 of 3 real indices: repeats (with replacement)
    other = CurriculumBatchSampler(100, 3, 32, 50, epochs=3, r_max=0.5, static=True, seed=1)
    assert indices(other) != first


def test_no_two_epoch_rank_pairs_share_a_stream():
    """The release seeds seed + epoch + rank, so epoch e on rank r + 1 repeats epoch e + 1 on rank r."""
    streams = {}
    for epoch in range(4):
        for rank in range(4):
            sampler = CurriculumBatchSampler(1000, 50, 16, 5, epochs=4, r_max=0.3, static=True, seed=7, rank=rank)
            sampler.set_epoch(epoch)
            streams[epoch, rank] = indices(sampler)
    assert len({str(b) for b in streams.values()}) == len(streams) == 16
    assert all(sum(i >= 1000 for i in batch) == round(0.3 * 16) for b in streams.values() for batch in b)


def test_start_iteration_resumes_the_same_batches_with_their_keys():
    sampler = CurriculumBatchSampler(100, 3, 8, 10, epochs=3, r_max=0.5, seed=2, rank=1)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start_iteration=7)
    assert len(sampler) == 3 and list(sampler) == whole[7:]
    assert whole[7][3] == Access(whole[7][3].index, 2, 2, 1, 7, 3)  # (index, seed, epoch, rank, iteration, slot)
    with pytest.raises(ConfigError, match="start_iteration"):
        sampler.set_epoch(0, start_iteration=11)


def test_works_as_a_dataloader_batch_sampler():
    class Keys(torch.utils.data.Dataset):
        def __getitem__(self, key: Access) -> int:
            return key.index

    sampler = CurriculumBatchSampler(15, 5, 4, 6, epochs=2, r_max=0.5, static=True)
    batches = list(torch.utils.data.DataLoader(Keys(), batch_sampler=sampler))
    assert len(batches) == 6 and all(int((b >= 15).sum()) == 2 for b in batches)


def test_bad_settings_are_typed_errors():
    with pytest.raises(ConfigError, match="r_max"):
        CurriculumBatchSampler(10, 0, 4, 2, 3, r_max=0.1)
    with pytest.raises(ConfigError, match="r_max"):
        CurriculumBatchSampler(10, 2, 4, 2, 3, r_max=1.5)
    with pytest.raises(ConfigError, match="batch_size"):
        CurriculumBatchSampler(10, 2, 0, 2, 3)
    synthetic_only = CurriculumBatchSampler(10, 0, 4, 2, 3, r_max=0.0)
    assert all(i < 10 for b in indices(synthetic_only) for i in b)
