"""The TAESD-family codec: the shipped TAEF2 loads strictly, reconstructs real photographs sharply, and its
latent scale is measured; broken weight files are named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynad import taesd
from dynad.autoencoder import (
    LatentCodec,
    WeightsNotFoundError,
    autoencoder_from_architecture,
    latent_scale,
    load_pretrained_vae,
)

MTD = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic-tile"


def test_taef2_ships_inside_the_package_and_loads_strictly():
    folder = taesd.resolve("taef2")
    assert (folder / "LICENSE").is_file() and "MIT" in (folder / "LICENSE").read_text()
    model = load_pretrained_vae("taef2")
    assert isinstance(model, taesd.TinyAutoencoder)
    assert model.latent_channels == 32 and model.pool  # read from the state dicts, not assumed
    z = model.encode(torch.zeros(1, 3, 64, 64))
    assert z.shape == (1, 32, 8, 8)


def test_a_mismatched_state_dict_names_the_file_and_the_keys(tmp_path):
    for part in ("encoder", "decoder"):
        shutil.copy(taesd.resolve("taef2") / f"taef2_{part}.pth", tmp_path / f"odd_{part}.pth")
    sd = torch.load(tmp_path / "odd_decoder.pth", weights_only=True)
    sd["3.conv.0.weight"] = torch.zeros(64, 64, 1, 1)  # wrong shape
    del sd["19.bias"]  # missing
    torch.save(sd, tmp_path / "odd_decoder.pth")
    with pytest.raises(ValueError, match=r"odd_decoder\.pth.*missing \['19\.bias'\].*3\.conv\.0\.weight"):
        taesd.load_tiny_autoencoder(tmp_path)


def test_a_taesd_variant_without_pooling_branches_is_built_from_its_keys(tmp_path):
    """A 4-channel, pool-free pair (the taesd/taesdxl layout) round-trips through save and strict load."""
    torch.manual_seed(0)
    model = taesd.TinyAutoencoder(4, pool=False)
    torch.save(model.encoder.state_dict(), tmp_path / "taesd_encoder.pth")
    torch.save(model.decoder.state_dict(), tmp_path / "taesd_decoder.pth")
    loaded = load_pretrained_vae(str(tmp_path))
    assert loaded.latent_channels == 4 and not loaded.pool
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(x), model.encode(x))
    rebuilt = autoencoder_from_architecture(loaded.arch)
    assert isinstance(rebuilt, taesd.TinyAutoencoder) and rebuilt.latent_channels == 4


@pytest.mark.realdata
def test_taef2_reconstructs_magnetic_tile_photos_sharply_and_the_scale_is_measured():
    if not MTD.is_dir():
        pytest.skip(f"Magnetic Tile data not found at {MTD} (CI has it; a user's clone does not)")
    files = sorted((MTD / "MT_Free" / "Imgs").glob("*.jpg"))[:8]
    x = torch.stack([
        torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((64, 64), Image.BILINEAR))).permute(2, 0, 1)
        for f in files
    ]).float() / 127.5 - 1  # fmt: skip
    vae = load_pretrained_vae("taef2")
    s = latent_scale(LatentCodec(vae, 1.0).encode(x))
    codec = LatentCodec(vae, s)
    z = codec.encode(x)
    assert abs(float(z.std()) - 1) < 0.01  # the measured scale gives unit-variance latents
    rec = codec.decode(z)
    psnr = 10 * torch.log10(1 / ((rec - x) / 2).pow(2).flatten(1).mean(1))
    assert psnr.mean() > 35  # 39 dB measured; a wrong pooling branch gives 31


def test_a_missing_autoencoder_explains_itself_without_a_download_warning(recwarn):
    """diffusers passes huggingface_hub an argument it deprecates, whose warning ("Downloading to a local directory
    does not use symlinks anymore") printed above the error of a package that never downloads."""
    with pytest.raises(WeightsNotFoundError, match="not found on this machine \\(dynad never downloads\\)"):
        load_pretrained_vae("dynad-tests/no-such-autoencoder")
    assert not [str(w.message) for w in recwarn if "ownload" in str(w.message)]


def test_a_mistyped_autoencoder_path_is_named_as_a_path(tmp_path):
    """A path that is not there read as a Hugging Face repo id: the error told how to get sd-vae-ft-mse, with
    diffusers' 'Checkout your internet connection' at its end."""
    missing = tmp_path / "my_vae"
    with pytest.raises(WeightsNotFoundError, match=f"^autoencoder.source = '{missing}': no such file or folder") as e:
        load_pretrained_vae(str(missing))
    assert "internet" not in str(e.value) and "taef2" in str(e.value)
