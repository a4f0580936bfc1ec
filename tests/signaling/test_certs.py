"""The local CA and server certificate: names, chain, a real TLS handshake."""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from rtc_agent.signaling import certs


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> certs.CertPaths:
    out = tmp_path_factory.mktemp("certs")
    return certs.generate(out, names=["agent.example.test"], addresses=["192.0.2.7"])


def test_server_cert_names(made: certs.CertPaths) -> None:
    leaf = load_chain(made.cert)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert "localhost" in dns
    assert socket.gethostname() in dns
    assert "agent.example.test" in dns
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("::1") in ips
    assert ipaddress.ip_address("192.0.2.7") in ips
    # every non-link-local address of this machine is named
    for addr in certs.local_addresses():
        assert addr in ips
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert days <= 398  # Apple's limit for TLS server certificates


def test_chain_verifies_against_ca(made: certs.CertPaths) -> None:
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    chain = load_chain(made.cert)
    assert chain[1] == ca  # server.pem carries the CA after the leaf
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("localhost"))
    built = verifier.verify(chain[0], [])
    assert built[-1] == ca
    ip_verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    ip_verifier.verify(chain[0], [])
    # a different CA must not verify it
    other, _ = certs.create_ca("someone else")
    stranger = (
        PolicyBuilder().store(Store([other])).build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(x509.verification.VerificationError):
        stranger.verify(chain[0], [])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_verifies_chain(made: certs.CertPaths, tmp_path: Path) -> None:
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(load_chain(made.cert)[0].public_bytes(certs.serialization.Encoding.PEM))
    out = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(made.ca_cert),
            "-verify_hostname",
            "localhost",
            "-purpose",
            "sslserver",
            str(leaf_only),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_private_keys_are_owner_only(made: certs.CertPaths) -> None:
    assert made.key.stat().st_mode & 0o077 == 0
    assert made.ca_key.stat().st_mode & 0o077 == 0


def test_tls_handshake_with_ssl_context(made: certs.CertPaths) -> None:
    """A client that trusts only ca.pem connects to a server using ssl_context()."""
    server_ctx = certs.ssl_context(made.cert, made.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve_one() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(made.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(5) == b"hello"
    thread.join(5)
    listener.close()
    assert not errors


def test_ca_is_kept_and_ensure_reuses(tmp_path: Path) -> None:
    first = certs.generate(tmp_path)
    ca_before = first.ca_cert.read_bytes()
    leaf_before = first.cert.read_bytes()
    again = certs.generate(tmp_path)
    assert again.ca_cert.read_bytes() == ca_before  # phones keep trusting it
    assert again.cert.read_bytes() != leaf_before  # a fresh server certificate
    leaf_now = again.cert.read_bytes()
    assert certs.ensure_certs(tmp_path).cert.read_bytes() == leaf_now


def test_ensure_creates_missing_and_https_context(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    ctx = certs.https_context(directory=str(d))
    assert isinstance(ctx, ssl.SSLContext)
    assert (d / certs.SERVER_CERT).exists() and (d / certs.CA_CERT).exists()
    with pytest.raises(ValueError):
        certs.https_context(cert=str(d / certs.SERVER_CERT))


def test_cli_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    certs.add_arguments(parser)
    argv = ["--dir", str(tmp_path), "--name", "phone.test", "--ip", "198.51.100.9"]
    args = parser.parse_args(argv)
    assert certs.run(args) == 0
    printed = capsys.readouterr().out
    assert "phone.test" in printed and "198.51.100.9" in printed
    assert certs.run(parser.parse_args(["--dir", str(tmp_path), "--ip", "nope"])) == 2
