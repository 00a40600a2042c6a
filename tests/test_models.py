"""Networks: shapes, presets, config round trip, and that a tiny model learns."""
import pytest
import torch
from helpers import conditioned_restorer
from napari_jpeg_restore.core.models import (
    build_config,
    config_from_dict,
    config_to_dict,
    count_parameters,
    create_model,
    model_from_config,
)


@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_returns_four_scales_and_embedding(channels):
    enc = create_model("cqe", "paper", channels).eval()
    out = enc(torch.rand(2, channels, 64, 64))
    assert [f.shape[1] for f in out.features] == [64, 64, 128, 256]
    assert [f.shape[-1] for f in out.features] == [64, 32, 16, 8]
    assert out.embedding.shape == (2, 256)
    proj = enc(torch.rand(2, channels, 64, 64), project=True)
    assert torch.allclose(proj.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("family,preset,channels", [("crl", "lite", 1), ("crl", "lite", 3),
                                                    ("crl", "paper", 1), ("crl", "unet", 1),
                                                    ("crl", "unet-deep", 3), ("arcnn", "lite", 1)])
def test_restorers_keep_shape(family, preset, channels):
    model = create_model(family, preset, channels).eval()
    x = torch.rand(1, channels, 64, 96)
    with torch.no_grad():
        assert model(x).shape == x.shape


def test_restorer_without_encoder_has_no_encoder_parameters():
    with_enc = create_model("crl", "lite", 1)
    without = create_model("crl", "lite", 1, use_encoder=False)
    assert without.encoder is None
    assert count_parameters(without) < count_parameters(with_enc)


def test_config_round_trip_rebuilds_identical_model():
    cfg = build_config("crl", "lite", 3)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    a, b = model_from_config(cfg), model_from_config(again)
    b.load_state_dict(a.state_dict())


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="channels"):
        build_config("crl", "lite", 2)
    with pytest.raises(ValueError, match="preset"):
        build_config("crl", "huge", 1)
    with pytest.raises(ValueError, match="family"):
        build_config("unet", "lite", 1)


@pytest.mark.parametrize("family", ["crl", "arcnn"])
def test_untrained_restorers_start_as_identity(family):
    model = create_model(family, "lite", 1).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_growth_keeps_the_function_and_refuses_other_mismatches():
    from napari_jpeg_restore.core.models.growth import load_grown

    torch.manual_seed(0)
    small = create_model("crl", "lite", 1, top_blocks=1).eval()
    for p in small.parameters():  # a "trained" model: no zero-initialised layers
        p.data.normal_(0, 0.05)
    deep = create_model("crl", "lite", 1, top_blocks=3).eval()
    assert load_grown(deep, small.state_dict()) == ["top.1", "top.2"]
    x = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(deep(x), small(x), rtol=0, atol=0)
        assert not torch.equal(deep(x), x)
    with pytest.raises(ValueError, match="has no place"):  # shrinking drops trained blocks
        load_grown(create_model("crl", "lite", 1, top_blocks=1), deep.state_dict())
    with pytest.raises(ValueError, match="missing"):  # a new attention block is not an identity
        load_grown(create_model("crl", "lite", 1, top_blocks=1, mid_attention=2), small.state_dict())
    with pytest.raises(ValueError, match="size mismatch|shape"):
        load_grown(create_model("crl", "lite", 1, top_blocks=1, widths=(16, 48, 64)), small.state_dict())


def test_multiscale_preset_grows_from_lite_with_its_function():
    """unet-narrow has lite's widths: the shipped lite weights start it, every residual block of
    its contracting and expanding paths an identity, so training continues from lite's output."""
    from napari_jpeg_restore.core.models.growth import load_grown

    torch.manual_seed(0)
    lite = create_model("crl", "lite", 1).eval()
    for p in lite.parameters():
        p.data.normal_(0, 0.05)
    grown = create_model("crl", "unet-narrow", 1).eval()
    added = load_grown(grown, lite.state_dict())
    cfg = grown.cfg
    assert len(added) == sum(cfg.enc_blocks) + sum(cfg.dec_blocks) > 0
    assert {name.split(".")[0] for name in added} == {"enc1", "enc2", "dec1", "dec2"}
    x = torch.rand(1, 1, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), lite(x), rtol=0, atol=0)
    assert count_parameters(grown) > 1.5 * count_parameters(lite)


def test_one_family_registry_round_trips_every_family_and_preset():
    from napari_jpeg_restore.core.models import (
        ENCODER_PRESETS,
        FAMILIES,
        RESTORER_PRESETS,
        build_config,
        config_from_dict,
        config_to_dict,
    )
    from napari_jpeg_restore.core.training.options import PRESETS

    assert set(PRESETS) == set(RESTORER_PRESETS) == set(ENCODER_PRESETS)  # the CLI offers every preset
    for family in FAMILIES:
        for preset in PRESETS:
            cfg = build_config(family, preset, 3)
            assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown model family"):
        build_config("unet")
    with pytest.raises(ValueError, match="unknown preset"):
        build_config("crl", "huge")


def test_dct_lattice_shows_the_quantization_steps_in_fp32_under_bf16_autocast():
    """A JPEG written with every step 16 puts each luma coefficient on a multiple of 16 (give or
    take the decoder's rounding): cos(2πc/16) is near 1; the never-compressed image has no lattice."""
    import io

    import numpy as np
    from napari_jpeg_restore.core.models.dct_lattice import LATTICE_STEPS, DctLattice
    from PIL import Image

    clean = (np.random.default_rng(0).random((64, 64)) * 180 + 40).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(clean).save(buf, "JPEG", qtables=[[16] * 64])
    jpeg = np.asarray(Image.open(buf))
    lattice = DctLattice()
    k = LATTICE_STEPS.index(16.0) + 1

    def cos16(image: np.ndarray) -> float:
        x = torch.from_numpy(image).float()[None, None] / 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = lattice(x)
        assert f.dtype == torch.float32
        return float(f[:, 64 * k:64 * (k + 1)].mean())

    assert cos16(jpeg) > 0.8 and abs(cos16(clean)) < 0.3


def test_encoder_with_a_dct_branch_round_trips_and_widens_the_embedding(tmp_path):
    from napari_jpeg_restore.core.registry import load_model, save_weights

    enc = create_model("cqe", "lite", 3, dct_width=32).eval()
    assert enc.cfg.embed_dim == enc.cfg.widths[-1] + 32
    save_weights(enc, tmp_path / "q.pt")
    again = load_model(tmp_path / "q.pt").eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(again(x).embedding, enc(x).embedding)
    assert enc(x).embedding.shape == (2, enc.cfg.embed_dim)


def test_table_conditioning_starts_as_its_blind_parent_and_then_depends_on_the_table():
    from napari_jpeg_restore.core.jpeg.codec import ijg_table
    from napari_jpeg_restore.core.models.growth import load_grown

    torch.manual_seed(1)
    blind = create_model("crl", "lite", 1).eval()
    with torch.no_grad():
        blind.tail.weight.normal_(0, 0.05)
    conditioned = create_model("crl", "lite", 1, condition=True).eval()
    assert load_grown(conditioned, blind.state_dict()) == ["condition"]
    x = torch.rand(2, 1, 64, 64)
    q10 = torch.from_numpy(ijg_table(10).reshape(1, 64).astype("float32")).repeat(2, 1)
    with torch.no_grad():
        assert torch.equal(conditioned(x, q10), blind(x))  # grown: the same function
        with pytest.raises(ValueError, match="tables"):
            conditioned(x)
        model = conditioned_restorer()
        q90 = torch.from_numpy(ijg_table(90).reshape(1, 64).astype("float32")).repeat(2, 1)
        assert (model(x, q10) - model(x, q90)).abs().max() > 1e-3
    rebuilt = model_from_config(config_from_dict(config_to_dict(model.cfg)))
    assert rebuilt.cfg.condition and rebuilt.condition is not None


def test_untrained_luma_chroma_is_its_gray_restorer_under_the_jpegs_chroma():
    from napari_jpeg_restore.core.pixels import RGB_TO_YCC

    torch.manual_seed(0)
    model = create_model("luma-chroma", "lite", 3).eval()
    for p in model.luma.tail.parameters():  # a gray restorer that does something
        torch.nn.init.normal_(p, std=0.01)
    x = torch.rand(1, 3, 64, 96)
    to_ycc = torch.tensor(RGB_TO_YCC, dtype=torch.float32)
    ycc = torch.einsum("pc,nchw->nphw", to_ycc, x)
    with torch.no_grad():
        expected = torch.cat([model.luma(ycc[:, :1]), ycc[:, 1:]], 1)
        out = torch.einsum("pc,nchw->nphw", to_ycc, model(x))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, :1], ycc[:, :1], atol=1e-3)  # the luma was restored
    assert model.frozen_part is model.luma
    with pytest.raises(ValueError, match="channels must be 3"):
        build_config("luma-chroma", "lite", 1)
