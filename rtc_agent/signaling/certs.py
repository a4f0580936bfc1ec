"""Create a local CA and a server certificate so phones on the LAN can use HTTPS.

Browsers give `getUserMedia` only to secure contexts: http://localhost works on
the machine itself, but a phone opening http://192.168.1.20:8080 gets no
microphone. `rtc-agent certs` makes a small CA (kept across runs, so a phone
trusts it once) and a server certificate signed by it whose names cover
localhost, this host's name and its addresses. Install `ca.pem` on the phone
(docs/deployment.md) and serve with `rtc-agent serve --https`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rtc_agent.signaling.addresses import host_addresses

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"  # leaf followed by the CA, as a TLS server sends its chain
SERVER_KEY = "server-key.pem"

CA_DAYS = 3650
# Apple rejects TLS server certificates valid for more than 825 days (398 for
# certificates from public CAs); a local CA's leaf stays under the lower bound.
SERVER_DAYS = 397

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CertPaths:
    """Where one set of certificates lives."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.dir / CA_KEY

    @property
    def cert(self) -> Path:
        return self.dir / SERVER_CERT

    @property
    def key(self) -> Path:
        return self.dir / SERVER_KEY


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def local_addresses() -> list[IPAddress]:
    """This machine's IP addresses (loopback included, link-local left out), for the
    certificate's names; found without network traffic (`addresses.host_addresses`)."""
    found: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for entry in host_addresses():
        addr = entry.address
        if addr.is_link_local or addr.is_unspecified or addr in found:
            continue
        found.append(addr)
    return found


def default_names() -> list[str]:
    """DNS names for the server certificate: localhost and this host's names."""
    names = ["localhost"]
    host = socket.gethostname().strip()
    if host:
        short = host.split(".", 1)[0]
        for name in (host, short, f"{short}.local"):  # .local: mDNS, how phones often reach it
            if name and name not in names:
                names.append(name)
    return names


def create_ca(
    common_name: str = "rtc-agent local CA",
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtc-agent"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def create_server_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Iterable[str],
    addresses: Iterable[IPAddress | str],
    days: int = SERVER_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for `names` and `addresses`, signed by the CA."""
    dns = list(dict.fromkeys(n for n in names if n))
    ips = list(dict.fromkeys(ipaddress.ip_address(str(a)) for a in addresses))
    if not dns and not ips:
        raise ValueError("a server certificate needs at least one name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else str(ips[0]))])
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in dns] + [x509.IPAddress(ip) for ip in ips]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def load_or_create_ca(paths: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Reuse the CA in `paths` (phones already trust it) or make a new one."""
    if paths.ca_cert.exists() and paths.ca_key.exists():
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key}: expected an EC private key")
        if cert.not_valid_after_utc > _now() + dt.timedelta(days=1):
            return cert, key
    cert, key = create_ca()
    _write_private(paths.ca_key, _key_pem(key))
    paths.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def generate(
    directory: str | os.PathLike[str] = "certs",
    names: Iterable[str] | None = None,
    addresses: Iterable[IPAddress | str] | None = None,
) -> CertPaths:
    """Write (or reuse) the CA and write a fresh server certificate into `directory`.

    `names`/`addresses` are added to the defaults (localhost, host names, local
    addresses), never replace them, so the certificate always works locally.
    """
    paths = CertPaths(Path(directory))
    paths.dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = load_or_create_ca(paths)
    all_names = default_names() + list(names or [])
    all_addresses: list[IPAddress | str] = [*local_addresses(), *(addresses or [])]
    cert, key = create_server_cert(ca_cert, ca_key, all_names, all_addresses)
    _write_private(paths.key, _key_pem(key))
    paths.cert.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return paths


def ensure_certs(directory: str | os.PathLike[str] = "certs") -> CertPaths:
    """The certificates in `directory`, created when missing or about to expire.

    This is what `serve --https` (without --cert/--key) calls.
    """
    paths = CertPaths(Path(directory))
    if paths.cert.exists() and paths.key.exists():
        try:
            leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
            if leaf.not_valid_after_utc > _now() + dt.timedelta(days=1):
                return paths
        except ValueError:
            pass  # unreadable: make a new one
    return generate(directory)


def ssl_context(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> ssl.SSLContext:
    """A server-side SSLContext for aiohttp from a PEM certificate chain and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


def https_context(
    cert: str | None = None, key: str | None = None, directory: str = "certs"
) -> ssl.SSLContext:
    """The SSLContext for `serve --https`.

    The given cert/key (a real certificate), else the local CA's in `directory`,
    created if missing.
    """
    if bool(cert) != bool(key):
        raise ValueError("--cert and --key go together")
    if cert and key:
        return ssl_context(cert, key)
    paths = ensure_certs(directory)
    return ssl_context(paths.cert, paths.key)


def describe(cert: x509.Certificate) -> list[str]:
    """The certificate's subject alternative names as text."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


def uncovered(cert: x509.Certificate, addresses: Iterable[IPAddress]) -> list[IPAddress]:
    """The addresses a browser would refuse this certificate for: those its subject
    alternative names do not list (browsers ignore the common name)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = set(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        covered = set()
    return [a for a in addresses if a not in covered]


def certificate_gaps(path: str | os.PathLike[str],
                     addresses: Iterable[IPAddress]) -> list[IPAddress]:
    """`uncovered` for the first certificate (the server's own) of a PEM chain file;
    OSError or ValueError when it cannot be read."""
    return uncovered(x509.load_pem_x509_certificate(Path(path).read_bytes()), addresses)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="certs", help="output directory (default: certs)")
    parser.add_argument("--name", action="append", default=[], help="extra DNS name (repeatable)")
    parser.add_argument("--ip", action="append", default=[], help="extra IP address (repeatable)")


def run(args: argparse.Namespace) -> int:
    try:
        addresses = [ipaddress.ip_address(a) for a in args.ip]
    except ValueError as exc:
        print(f"rtc-agent certs: {exc}")
        return 2
    paths = generate(args.dir, names=args.name, addresses=addresses)
    leaf = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    print(f"CA certificate:     {paths.ca_cert}  (install this on phones, see docs/deployment.md)")
    print(f"server certificate: {paths.cert}")
    print(f"server key:         {paths.key}")
    print("names: " + ", ".join(describe(leaf)))
    print(f"valid until {leaf.not_valid_after_utc:%Y-%m-%d}; run: rtc-agent serve --https")
    return 0
