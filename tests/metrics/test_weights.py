"""`genlab weights list|fetch|verify|path`: the optional networks, offline. Never downloads (closed port)."""

from __future__ import annotations

import pytest

from genlab.cache import record_sha256
from genlab.cli import main
from genlab.metrics import perceptual
from genlab.metrics.features import INCEPTION_FILENAME, INCEPTION_URL, FeatureWeightsMissing, load_inception
from genlab.metrics.perceptual import load_lpips
from genlab.metrics.weights import OPTIONAL_NETWORKS, fetch_network, verify_present


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty genlab cache, no weight paths in the environment, no lpips package, downloads to a closed port."""
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GENLAB_WEIGHTS_MIRROR", "http://127.0.0.1:9")
    monkeypatch.setenv("GENLAB_INCEPTION_URL", f"http://127.0.0.1:9/{INCEPTION_FILENAME}")
    for variable in ("GENLAB_INCEPTION_WEIGHTS", "GENLAB_LPIPS_WEIGHTS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(perceptual, "_lpips_package_heads", lambda net: None)
    return tmp_path / "cache" / "weights"


def test_list_shows_every_network_absent(cache, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("inception", "lpips-alex", "lpips-vgg"):
        assert f"{name}:" in out
    for needed in ("FID", "LPIPS", "AlexNet", "VGG16", "linear heads", "GENLAB_INCEPTION_WEIGHTS",
                   "GENLAB_LPIPS_WEIGHTS_DIR", "sha256 6726825d", "sha256 7be5be79", str(cache / INCEPTION_FILENAME)):
        assert needed in out
    files = sum(len(network.files) for network in OPTIONAL_NETWORKS.values())
    assert out.count("[absent]") == files == 5 and "present at" not in out


def test_fetch_offline_is_one_line_with_url_and_path(cache, capsys):
    assert main(["weights", "fetch", "inception"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"http://127.0.0.1:9/{INCEPTION_FILENAME}" in err and str(cache / INCEPTION_FILENAME) in err
    assert not (cache / INCEPTION_FILENAME).exists()
    with pytest.raises(FeatureWeightsMissing):
        fetch_network("lpips-alex")


def test_unknown_name_lists_the_valid_ones(cache, capsys):
    assert main(["weights", "path", "resnet"]) == 2
    assert "inception, lpips-alex, lpips-vgg" in capsys.readouterr().err


def test_path_prints_the_cache_paths(cache, capsys):
    assert main(["weights", "path", "inception"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / INCEPTION_FILENAME)
    assert main(["weights", "path", "lpips-vgg"]) == 0
    assert capsys.readouterr().out.split() == [str(cache / "vgg16-397923af.pth"), str(cache / "lpips-v0.1-vgg.pth")]


def test_verify_detects_a_corrupted_file(cache, capsys):
    assert main(["weights", "verify"]) == 0 and "no weight files present" in capsys.readouterr().out
    cache.mkdir(parents=True)
    heads = cache / "lpips-v0.1-alex.pth"  # no checksum in its name: checked against the recorded one
    heads.write_bytes(b"fake heads")
    record_sha256(heads)
    assert verify_present() == [("lpips-alex", heads, None)]
    assert main(["weights", "list"]) == 0 and f"present at {heads}" in capsys.readouterr().out
    heads.write_bytes(b"changed on disk")  # differs from the recorded sum
    inception = cache / INCEPTION_FILENAME
    inception.write_bytes(b"not the inception weights")  # does not match the 6726825d prefix in its name
    assert main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"BAD inception {inception}" in out and "6726825d" in out
    assert f"BAD lpips-alex {heads}" in out and "recorded" in out


def test_offline_loader_messages_are_short_and_name_the_fix(cache):
    for load, name, url in ((load_inception, "inception", INCEPTION_URL),
                            (load_lpips, "lpips-alex", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")):
        with pytest.raises(FeatureWeightsMissing) as error:
            load()
        message = str(error.value)
        assert len(message.splitlines()) <= 2 and url in message
        assert message.endswith(f"run `genlab weights fetch {name}` or put the file at {cache / url.rsplit('/', 1)[1]}")
