"""Augmentation: random rotation, scale, shear, shift, elastic distortion, pen width, erasing and
photometric changes of training batches."""

import pytest
import torch

from cnn_mnist.data.augment import Augmentation, affine_grid, augment, augment_views, smooth_upsample
from cnn_mnist.data.inputs import numpy_input_fn
from cnn_mnist.errors import ConfigError


def digits(n=16, seed=0):
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    for i in range(n):  # a bright bar of random length near the centre of each image
        top = int(torch.randint(6, 12, (1,), generator=generator))
        images[i, top:top + 10, 12:16] = 255
    return images


def centre_of_mass(batch):
    weights = batch.reshape(len(batch), 28, 28)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = weights.sum(dim=(1, 2))
    return torch.stack([(weights * ys).sum(dim=(1, 2)) / mass, (weights * xs).sum(dim=(1, 2)) / mass], 1)


def test_no_augmentation_is_the_identity_and_is_false():
    images = digits()
    out = augment(images, Augmentation(), torch.Generator().manual_seed(0))
    assert out.shape == (16, 1, 28, 28) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], images.float() / 255, atol=1e-6, rtol=0)
    assert not Augmentation() and Augmentation(shift=1)


def test_shifts_move_digits_by_at_most_the_range_and_keep_their_ink():
    images = digits()
    out = augment(images, Augmentation(shift=2), torch.Generator().manual_seed(0))
    moved = centre_of_mass(out) - centre_of_mass(images.float())
    assert moved.abs().max() <= 2.0 + 1e-4 and moved.abs().max() > 0.5
    torch.testing.assert_close(out.sum(dim=(1, 2, 3)), images.float().sum(dim=(1, 2)) / 255, rtol=0.02, atol=0)


def test_rotation_turns_a_vertical_bar():
    bar = digits(1)
    out = augment(bar.expand(64, 28, 28), Augmentation(rotation=30), torch.Generator().manual_seed(0))
    columns_with_ink = (out[:, 0] > 0.5).any(dim=1).sum(dim=1).float()  # a turned bar spans more columns
    assert columns_with_ink.max() >= 7 and columns_with_ink.max() <= 9  # 4 wide, 10 tall, up to 30 degrees
    assert out.min() >= 0 and out.max() <= 1


def test_elastic_distortion_bends_without_moving_the_digit_far():
    images = digits()
    out = augment(images, Augmentation(elastic=1.0), torch.Generator().manual_seed(0))
    assert not torch.allclose(out[:, 0], images.float() / 255)
    assert (centre_of_mass(out) - centre_of_mass(images.float())).abs().max() < 3


def test_the_same_generator_state_gives_the_same_batch():
    images, aug = digits(), Augmentation(rotation=10, scale=0.1, shear=10, shift=2, elastic=1)
    first = augment(images, aug, torch.Generator().manual_seed(7))
    again = augment(images, aug, torch.Generator().manual_seed(7))
    other = augment(images, aug, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("kwargs, message", [
    ({"rotation": -1}, "rotation must be a finite number >= 0"),
    ({"shift": float("nan")}, "shift must be a finite number"),
    ({"scale": 1.0}, "scale must be below 1"),
    ({"stroke": 1.5}, "stroke must be at most 1"),
    ({"erase": 0.6}, "erase must be at most 0.5"),
    ({"erase": 0.01}, "erase must be 0 \\(off\\) or at least 0.02"),
    ({"damage_from_epoch": 2, "damage_until_epoch": 2}, "damage_until_epoch \\(2\\) must be 0 \\(never\\) or after"),
])
def test_bad_ranges_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Augmentation(**kwargs)


def test_an_augmented_stream_resumes_with_the_same_batches():
    images, labels = digits(50), torch.arange(50) % 10
    input_fn = numpy_input_fn(images, labels, batch_size=16, num_epochs=None, shuffle=True, seed=3,
                              augmentation=Augmentation(rotation=10, shift=2, elastic=1))
    stream = input_fn()
    for _ in range(4):
        next(stream)
    saved = stream.state_dict()
    expected = [next(stream) for _ in range(3)]
    resumed = input_fn()
    assert resumed.load_state_dict(saved)
    for want, got in zip(expected, [next(resumed) for _ in range(3)], strict=True):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_each_epoch_transforms_the_same_images_anew():
    images, labels = digits(50), torch.arange(50) % 10
    stream = numpy_input_fn(images, labels, batch_size=50, num_epochs=None, shuffle=False,
                            augmentation=Augmentation(shift=2))()
    first_epoch, second_epoch = next(stream), next(stream)
    assert torch.equal(first_epoch[1], second_epoch[1]) and not torch.equal(first_epoch[0], second_epoch[0])


def test_the_sampling_grid_is_torchs_affine_grid_laid_out_channels_first():
    theta = torch.randn(32, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.affine_grid(theta, [32, 1, 28, 28], align_corners=False)
    torch.testing.assert_close(affine_grid(theta).permute(0, 2, 3, 1), expected, atol=2e-6, rtol=0)


def test_the_elastic_field_is_a_bicubic_resize_of_the_coarse_one():
    coarse = torch.randn(8, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bicubic", align_corners=False)
    torch.testing.assert_close(smooth_upsample(coarse), expected, atol=2e-6, rtol=0)


def test_photometric_augmentation_greys_the_paper_fades_the_ink_and_adds_noise():
    images = digits()
    paper = images == 0
    grey = augment(images, Augmentation(brightness=0.5), torch.Generator().manual_seed(1))[:, 0]
    levels = grey[paper].reshape(-1)
    assert levels.min() >= 0 and levels.max() <= 0.5 and levels.std() > 0  # each image its own grey
    faded = augment(images, Augmentation(contrast=0.6), torch.Generator().manual_seed(1))[:, 0]
    ink = faded.amax(dim=(1, 2))
    assert (ink >= 0.4 - 1e-6).all() and (ink <= 1).all() and ink.min() < 0.9 and (faded[paper] == 0).all()
    noisy = augment(images, Augmentation(noise=0.2), torch.Generator().manual_seed(1))[:, 0]
    assert noisy[paper].max() > 0 and noisy.min() >= 0 and noisy.max() <= 1
    assert Augmentation(noise=0.1) and Augmentation(brightness=0.2)


def test_photometric_augmentation_leaves_the_geometric_draws_as_they_were():
    """The brightness, contrast and noise numbers are drawn after the geometric ones: a geometric
    run's batches are unchanged, and adding brightness changes nothing but the levels."""
    images = digits()
    geometric = augment(images, Augmentation(rotation=10, shift=2), torch.Generator().manual_seed(5))
    both = augment(images, Augmentation(rotation=10, shift=2, brightness=0.3), torch.Generator().manual_seed(5))
    assert torch.equal(geometric, augment(images, Augmentation(rotation=10, shift=2), torch.Generator().manual_seed(5)))
    assert torch.equal(both >= geometric - 1e-6, torch.ones_like(both, dtype=torch.bool))
    offsets = (both - geometric)[:, 0][images == 0]
    assert offsets.max() <= 0.3 + 1e-6


def test_pen_width_thickens_or_thins_strokes_without_moving_them():
    images = digits(64)
    out = augment(images, Augmentation(stroke=1), torch.Generator().manual_seed(2))[:, 0]
    before, after = images.float().div(255).sum(dim=(1, 2)), out.sum(dim=(1, 2))
    thicker, thinner = after > before + 1, after < before - 1
    assert thicker.any() and thinner.any()  # both directions are drawn
    assert (after <= before + 2 * (10 + 6)).all()  # at most one pixel more on each side of a 10x4 bar
    torch.testing.assert_close(centre_of_mass(out)[thicker | thinner], centre_of_mass(images)[thicker | thinner],
                               atol=0.3, rtol=0)
    # The full amount is the 3x3 dilation or erosion itself: a 4-wide bar becomes 6 or 2 wide.
    bar = digits(1)
    wide = torch.nn.functional.max_pool2d(bar.float().div(255)[None], 3, stride=1, padding=1)[0]
    assert wide.sum() == (10 + 2) * (4 + 2)


def test_erasing_fills_one_rectangle_of_one_grey_in_about_half_the_images():
    images = torch.full((400, 28, 28), 77, dtype=torch.uint8)  # flat, so any change is the patch
    out = augment(images, Augmentation(erase=0.3), torch.Generator().manual_seed(4))[:, 0]
    changed = (out - 77 / 255).abs() > 1e-6
    erased = changed.any(dim=(1, 2))
    assert 0.4 < erased.float().mean() < 0.6
    for image, mask in zip(out[erased][:50], changed[erased][:50], strict=True):
        rows, cols = mask.any(dim=1).nonzero()[:, 0], mask.any(dim=0).nonzero()[:, 0]
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # a solid rectangle
        assert mask.sum() <= 0.3 * 784 + 2 * 28 and mask.sum() >= 0.02 * 784 / 2
        assert image[mask].unique().numel() == 1  # of one grey


def test_newer_ingredients_leave_the_earlier_draws_as_they_were():
    """Pen width and erasing draw after everything else: a photometric recipe's levels are unchanged."""
    images = torch.zeros(16, 28, 28, dtype=torch.uint8)  # blank paper: the grey is all that shows
    grey = augment(images, Augmentation(brightness=0.5), torch.Generator().manual_seed(3))
    both = augment(images, Augmentation(brightness=0.5, stroke=0.5), torch.Generator().manual_seed(3))
    assert torch.equal(grey, both)


def test_a_clean_share_of_the_images_keeps_only_the_geometric_changes():
    images = digits(400)
    aug = Augmentation(shift=2, brightness=0.5, noise=0.1)
    geometric = augment(images, Augmentation(shift=2), torch.Generator().manual_seed(6))
    full = augment(images, aug, torch.Generator().manual_seed(6))
    mixed = augment(images, Augmentation(shift=2, brightness=0.5, noise=0.1, clean_share=0.3),
                    torch.Generator().manual_seed(6))
    kept = (mixed == geometric).flatten(1).all(dim=1)
    assert 0.2 < kept.float().mean() < 0.4
    assert torch.equal(mixed[~kept], full[~kept])  # the others exactly as without the share
    assert not Augmentation(clean_share=0.5)  # a share of nothing is no augmentation


def test_outline_hollows_the_strokes_of_the_share_it_draws():
    images = digits(200)
    out = augment(images, Augmentation(outline=0.5), torch.Generator().manual_seed(9))[:, 0]
    original = images.float() / 255
    hollow = ~((out - original).abs() < 1e-4).flatten(1).all(dim=1)
    assert 0.35 < hollow.float().mean() < 0.65
    bar = out[hollow][0].round()  # the identity resampling is exact to ~1e-6
    row = bar[bar.sum(dim=1).nonzero()[:, 0].float().mean().int()]  # across the middle of a 4-wide bar:
    assert row.tolist() == [0.0] * 11 + [1.0, 1.0, 0.0, 0.0, 1.0, 1.0] + [0.0] * 11  # two 2-wide lines


def test_damage_begins_at_its_epoch_and_a_resumed_stream_agrees():
    images, labels = digits(50), torch.arange(50) % 10
    input_fn = numpy_input_fn(images, labels, batch_size=25, num_epochs=None, shuffle=False, seed=2,
                              augmentation=Augmentation(brightness=0.5, damage_from_epoch=1.0))
    stream = input_fn()
    first_epoch = [next(stream) for _ in range(2)]
    for batch, start in zip(first_epoch, (0, 25), strict=True):  # the first epoch: clean digits
        torch.testing.assert_close(batch[0][:, 0], images[start:start + 25].float() / 255, atol=1e-6, rtol=0)
    saved = stream.state_dict()
    damaged = next(stream)[0]
    assert (damaged[:, 0][images[:25] == 0] > 0).any()  # from the second: grey paper
    resumed = input_fn()
    assert resumed.load_state_dict(saved)
    assert torch.equal(next(resumed)[0], damaged)


def test_damage_ends_at_its_epoch_and_a_resumed_stream_agrees():
    images, labels = digits(50), torch.arange(50) % 10
    input_fn = numpy_input_fn(images, labels, batch_size=25, num_epochs=None, shuffle=False, seed=2,
                              augmentation=Augmentation(brightness=0.5, damage_until_epoch=1.5))
    stream = input_fn()
    for start in (0, 25, 0):  # epochs 0 to 1.5: grey paper
        assert (next(stream)[0][:, 0][images[start:start + 25] == 0] > 0).any()
    saved = stream.state_dict()
    last = [next(stream)[0] for _ in range(2)]  # from 1.5 on: the digits as they are
    for batch, start in zip(last, (25, 0), strict=True):
        torch.testing.assert_close(batch[:, 0], images[start:start + 25].float() / 255, atol=1e-6, rtol=0)
    resumed = input_fn()
    assert resumed.load_state_dict(saved)
    assert torch.equal(next(resumed)[0], last[0])


def test_views_are_each_image_clean_and_the_same_image_damaged():
    images = digits(200)
    aug = Augmentation(shift=2, brightness=0.5, noise=0.1, clean_share=0.5)
    views = augment_views(images, aug, torch.Generator().manual_seed(4))
    assert views.shape == (200, 2, 1, 28, 28)
    # the clean view is augment's geometric one, from the same draws
    assert torch.equal(views[:, 0], augment(images, aug, torch.Generator().manual_seed(4), damage=False))
    # every damaged view is damaged (the clean share plays no part) and exactly as with no share
    assert not (views[:, 1] == views[:, 0]).flatten(1).all(dim=1).any()
    everything = augment(images, Augmentation(shift=2, brightness=0.5, noise=0.1), torch.Generator().manual_seed(4))
    assert torch.equal(views[:, 1], everything)


def test_a_paired_stream_gives_both_views_once_the_damage_begins():
    images, labels = digits(50), torch.arange(50) % 10
    stream = numpy_input_fn(images, labels, batch_size=25, num_epochs=None, shuffle=False, seed=2, paired=True,
                            augmentation=Augmentation(brightness=0.5, damage_from_epoch=1.0))()
    first, _ = next(stream), next(stream)
    assert first[0].shape == (25, 1, 28, 28) and first[1].shape == (25,)  # clean digits: one view
    paired, labels_now = next(stream)
    assert paired.shape == (25, 2, 1, 28, 28) and torch.equal(labels_now, labels[:25])
    torch.testing.assert_close(paired[:, 0, 0], images[:25].float() / 255, atol=1e-6, rtol=0)
    assert (paired[:, 1, 0][images[:25] == 0] > 0).all()  # grey paper on every damaged view
