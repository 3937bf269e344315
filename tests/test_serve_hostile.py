"""Security and hostile input against a real ``segearth-geo serve`` (loopback only): the token, TLS, the bind
check, malformed and oversized requests, slow clients, thousands of connections, one client's failing chips.
Through all of it the server stays up and a well-behaved client's results stay exact."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from geo_fixtures import write_utm
from serve_models import POISON
from serve_support import TOKEN, Server, run_cli, wait_until
from test_serve import assert_identical_polygons, info, segment_cli

from segearth_geo.serve.wire import CHIPS_TYPE, PREFIX, decode_response, encode_request


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_utm(tmp_path_factory.mktemp("scene") / "scene.tif", 300, 200)


def _request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             tls: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls) if tls else
            http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _chips_body(chips=None, prompts=("red",)) -> bytes:
    chips = chips if chips is not None else [np.full((16, 16, 3), (200, 10, 10), np.uint8)]
    return b"".join(bytes(p) for p in encode_request(chips, list(prompts)))


def _auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": CHIPS_TYPE}


def _one_line_error(status: int, body: bytes, expected: int) -> dict:
    assert status == expected, (status, body)
    payload = json.loads(body)
    assert set(payload) == {"error", "message"} and "\n" not in payload["message"]
    return payload


def test_the_token_is_required_compared_and_never_shown(scene, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with Server("smooth", "--token-file", str(token_file)) as server:
        server.token = TOKEN
        for headers in ({"Content-Type": CHIPS_TYPE}, _auth("wrong-token"), _auth(TOKEN + "x"),
                        {"Authorization": TOKEN, "Content-Type": CHIPS_TYPE}):
            status, got, body = _request(server.port, "POST", "/v1/segment", _chips_body(), headers)
            _one_line_error(status, body, 401)
            assert got.get("www-authenticate") == "Bearer"
        assert _request(server.port, "GET", "/v1/info")[0] == 401
        assert _request(server.port, "GET", "/v1/health")[0] == 200  # for load balancers, says nothing
        assert info(server)["chips_done"] == 0  # nothing ran
        refused = run_cli("segment", str(scene), "red", "-o", str(tmp_path / "x.gpkg"), "--model", server.url,
                          SEGEARTH_TOKEN="not-the-token")
        assert refused.returncode == 1 and "refused the token" in refused.stderr
        assert "not-the-token" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert segment_cli(scene, tmp_path / "ok.gpkg", server.url, SEGEARTH_TOKEN=TOKEN) is not None
    assert TOKEN not in "\n".join(server.stderr + server.stdout)


def test_binding_beyond_this_machine_without_a_token_is_refused_in_one_line():
    done = run_cli("serve", "--model", "tests/serve_models.py:smooth", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2 and "without a token" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_cli("serve", "--model", "tests/serve_models.py:smooth", "--certfile", "/nonexistent.pem")
    assert done.returncode == 2 and "--keyfile" in done.stderr


def test_the_client_never_sends_a_token_over_plain_http_beyond_this_machine(monkeypatch):
    from segearth_geo.errors import UsageError
    from segearth_geo.serve.client import RemoteSegmenter

    monkeypatch.delenv("SEGEARTH_ALLOW_INSECURE_TOKEN", raising=False)
    with pytest.raises(UsageError, match="https://"):
        RemoteSegmenter("http://192.0.2.1:8765", token="secret-1")  # refused before any connection
    with pytest.raises(UsageError, match="no user, password"):
        RemoteSegmenter("http://user:secret-2@127.0.0.1:1")


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from datetime import datetime, timedelta, timezone
    from ipaddress import ip_address

    cryptography = pytest.importorskip("cryptography")  # noqa: F841
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(scene, tmp_path):
    cert, key = _self_signed(tmp_path)
    want = segment_cli(scene, tmp_path / "local.gpkg", "tests/serve_models.py:smooth")
    with Server("smooth", "--certfile", str(cert), "--keyfile", str(key), token=TOKEN, scheme="https") as server:
        got = segment_cli(scene, tmp_path / "tls.gpkg", server.url, SEGEARTH_TOKEN=TOKEN, SEGEARTH_CA_BUNDLE=str(cert))
        assert_identical_polygons(got, want)
        untrusted = run_cli("segment", str(scene), "red", "-o", str(tmp_path / "x.gpkg"), "--model", server.url,
                            SEGEARTH_TOKEN=TOKEN)
        assert untrusted.returncode == 1 and "SEGEARTH_CA_BUNDLE" in untrusted.stderr
        with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):  # plain http to a TLS port
            _request(server.port, "GET", "/v1/health")


def _hostile_bodies(chip_size: int = 64) -> list[tuple[str, bytes, dict, int]]:
    header = json.dumps({"prompts": ["red"], "chips": [[2, 2]]}).encode()
    good_prefix = PREFIX.pack(b"SEGC", 1, len(header)) + header
    return [
        ("garbage", b"\x00" * 100, _auth(), 400),
        ("truncated chips", good_prefix + b"\x01" * 5, _auth(), 400),
        ("extra bytes", good_prefix + b"\x01" * 20, _auth(), 400),
        ("wrong content type", _chips_body(), {**_auth(), "Content-Type": "application/json"}, 415),
        ("huge declared header", PREFIX.pack(b"SEGC", 1, 2**31) + b"{}", _auth(), 400),
        ("float chips declared", _chips_body().replace(b"[[16,16]]", b"[[16.0,16]]"), _auth(), 400),
        ("chip too large", b"".join(bytes(p) for p in encode_request([np.zeros((65, 10, 3), np.uint8)], ["red"])),
         _auth(), 413),
        ("too many chips", b"".join(bytes(p) for p in encode_request([np.zeros((1, 1, 3), np.uint8)] * 65, ["red"])),
         _auth(), 413),
        ("too many prompts", _chips_body(prompts=[f"p{i}" for i in range(17)]), _auth(), 413),
        ("prompt too long", _chips_body(prompts=["x" * 1001]), _auth(), 413),
        ("a path instead of pixels", PREFIX.pack(b"SEGC", 1, 40) + b'{"prompts":["/etc/passwd"],"raster":"x"}',
         _auth(), 400),
    ]


def test_hostile_requests_get_one_line_4xx_and_never_disturb_a_well_behaved_client(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", "tests/serve_models.py:smooth")
    with Server("smooth", token=TOKEN) as server:
        results: list = []
        honest = threading.Thread(target=lambda: results.append(segment_cli(scene, tmp_path / "honest.gpkg",
                                                                            server.url, SEGEARTH_TOKEN=TOKEN)))
        honest.start()
        for name, body, headers, status in _hostile_bodies():
            got_status, _, got = _request(server.port, "POST", "/v1/segment", body, headers)
            assert got_status == status, (name, got_status, got)
            _one_line_error(got_status, got, status)
        # A declared size beyond the limit is refused before any byte of the body is read.
        conn = socket.create_connection(("127.0.0.1", server.port), 10)
        conn.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
                     f"{CHIPS_TYPE}\r\nContent-Length: {10**12}\r\n\r\n".encode())
        assert b" 413 " in conn.recv(4096)
        conn.close()
        # Chunked bodies have no declared size: refused.
        conn = socket.create_connection(("127.0.0.1", server.port), 10)
        conn.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
                     f"{CHIPS_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode())
        assert b" 411 " in conn.recv(4096)
        conn.close()
        for method, path, status in (("GET", "/etc/passwd", 404), ("DELETE", "/v1/segment", 405),
                                     ("GET", "/v1/segment", 405)):
            got_status, _, got = _request(server.port, method, path, b"", _auth())
            _one_line_error(got_status, got, status)
        honest.join(300)
        assert results, "the honest client did not finish"
        assert_identical_polygons(results[0], want)
        assert server.alive()
    assert TOKEN not in "\n".join(server.stderr)


@pytest.mark.slow
def test_slow_clients_and_thousands_of_connections_do_not_take_the_server_down(scene, tmp_path):
    want = segment_cli(scene, tmp_path / "local.gpkg", "tests/serve_models.py:smooth")
    with Server("smooth") as server:
        idle = []
        for _ in range(1500):  # more than the connection limit (1000): the rest wait in the backlog or fail
            try:
                idle.append(socket.create_connection(("127.0.0.1", server.port), 5))
            except OSError:
                break
        started = time.monotonic()
        # Connections that send no headers are closed after the header deadline (10 s): slots come back and the
        # well-behaved client (which retries 503s) gets through.
        got = segment_cli(scene, tmp_path / "remote.gpkg", server.url)
        assert_identical_polygons(got, want)
        assert time.monotonic() - started < 120
        assert wait_until(lambda: _closed(idle[0]), 30)
        for sock in idle:
            sock.close()
        slow_body = socket.create_connection(("127.0.0.1", server.port), 10)
        slow_body.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: {CHIPS_TYPE}\r\n"
                          "Content-Length: 1000\r\n\r\nSEGC".encode())  # then nothing: the body never comes
        slow_body.settimeout(60)
        assert b" 408 " in slow_body.recv(4096)  # the body deadline: 30 s + 1 s/MiB
        slow_body.close()
        assert server.alive()


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.1)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_one_clients_poisoned_chip_fails_only_its_own_request(tmp_path):
    with Server("poison", "--max-wait-ms", "300") as server:
        good_chips = [np.full((16, 16, 3), (200, 10, 10), np.uint8)] * 3
        bad_chips = [np.full((16, 16, 3), 50, np.uint8)]
        bad_chips[0][0, 0] = POISON
        answers: dict = {}

        def send(name, chips):
            answers[name] = _request(server.port, "POST", "/v1/segment", _chips_body(chips),
                                     {"Content-Type": CHIPS_TYPE, "X-SegEarth-Client": name})

        threads = [threading.Thread(target=send, args=("good", good_chips)),
                   threading.Thread(target=send, args=("bad", bad_chips))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers["bad"][0] == 500 and "poisoned" in json.loads(answers["bad"][2])["message"]
        assert answers["good"][0] == 200
        results, _ = decode_response(answers["good"][2], [(16, 16)] * 3, 1, 0.5)
        assert all(len(p.targets) == 1 and p.targets[0].probability.max() > 0.5 for p in results[0])
        assert server.alive()
