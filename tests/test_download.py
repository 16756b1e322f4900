"""`python -m videogpt.download c3d` against a real HTTP server on 127.0.0.1 (no internet here): files in the
published layout are fetched and checked; an error page, a wrong layout and a dead source are refused, falling
through to the next source, and never leave a file that looks complete."""
from __future__ import annotations

import dataclasses
import functools
import http.server
import threading

import numpy as np
import pytest

from videogpt import download
from videogpt.metrics import c3d


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path.startswith("/html/"):   # a quota / login page served with status 200
            body = b"<html>Google Drive - quota exceeded</html>" * 100
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serves good/ (the published layout, zero weights) and bad/ (fc8 with 100 classes) over HTTP."""
    root = tmp_path_factory.mktemp("www")
    good, bad = root / "good", root / "bad"
    good.mkdir(), bad.mkdir()
    arrays = {k: np.zeros(shape, np.float32) for k, shape in c3d.published_shapes().items()}
    np.savez(good / c3d.WEIGHTS_FILE, **arrays)
    np.savez(good / c3d.MEAN_FILE, mean=np.full((1, 3, 16, 128, 171), 100.0, np.float32))   # as released
    arrays["fc8/W"] = arrays["fc8/W"][:100]
    np.savez(bad / c3d.WEIGHTS_FILE, **arrays)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _sources(monkeypatch, weights_urls, mean_urls):
    weights, mean = download.ASSETS["c3d"]
    monkeypatch.setitem(download.ASSETS, "c3d", (dataclasses.replace(weights, urls=tuple(weights_urls)),
                                                 dataclasses.replace(mean, urls=tuple(mean_urls))))


def test_c3d_download_falls_through_bad_sources_and_checks_the_layout(server, monkeypatch, tmp_path, capsys):
    w, m = c3d.WEIGHTS_FILE, c3d.MEAN_FILE
    _sources(monkeypatch, [f"{server}/html/{w}", f"{server}/missing/{w}", f"{server}/bad/{w}", f"{server}/good/{w}"],
             [f"{server}/good/{m}"])
    path = download.download("c3d", tmp_path, timeout=10)
    assert path == tmp_path / w and (tmp_path / m).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([w, m])          # no .part left behind
    model = c3d.load_c3d(path)
    assert float(model.mean[0, 0, 0, 0]) == 100.0 and model.mean.shape == (3, 16, 112, 112)
    captured = capsys.readouterr()
    assert "fetching" in captured.err and "no published checksum" in captured.out
    # present files are checked again, not fetched
    assert download.download("c3d", tmp_path) == path
    assert "present, sha256" in capsys.readouterr().out


def test_c3d_download_refuses_every_bad_source_with_the_reasons(server, monkeypatch, tmp_path):
    w, m = c3d.WEIGHTS_FILE, c3d.MEAN_FILE
    _sources(monkeypatch, [f"{server}/html/{w}", f"{server}/bad/{w}"], [f"{server}/good/{m}"])
    with pytest.raises(download.DownloadError) as e:
        download.download("c3d", tmp_path, timeout=10)
    text = str(e.value)
    assert "HTML page" in text and r"fc8/W: (100, 4096) vs (101, 4096)" in text
    assert not (tmp_path / w).exists() and not list(tmp_path.glob("*.part"))


def test_cli_names_the_choices():
    with pytest.raises(SystemExit):
        download.main(["vgg"])
    with pytest.raises(ValueError, match="choose from i3d, c3d"):
        download.download("vgg")
