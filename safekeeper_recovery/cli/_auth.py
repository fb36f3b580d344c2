"""``keygen`` and ``token``: make the Ed25519 key pair and sign JWTs for auth."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..core import TenantId
from ..transport import generate_keypair, issue_token
from ._main import main
from ._options import DURATION, TENANT_ID

__all__ = ["keygen", "token"]

PRIVATE_KEY_FILE = "auth_private_key.pem"
PUBLIC_KEY_FILE = "auth_public_key.pem"


@main.command()
@click.option(
    "--out-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for auth_private_key.pem (mode 0600) and auth_public_key.pem.",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(out_dir: Path, force: bool) -> None:
    """Generate an Ed25519 key pair for JWT auth.

    Give every node the public key (--auth-public-key); keep the private key to sign
    tokens with `safekeeper-recovery token`.
    """
    private, public = generate_keypair()
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / PRIVATE_KEY_FILE
    public_path = out_dir / PUBLIC_KEY_FILE
    if not force and (private_path.exists() or public_path.exists()):
        raise click.ClickException(f"key files already exist in {out_dir} (use --force)")
    _write(private_path, private, 0o600)
    _write(public_path, public, 0o644)
    click.echo(f"wrote {private_path} and {public_path}")


@main.command()
@click.option(
    "--private-key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The PEM private key made by `keygen`.",
)
@click.option(
    "--scope",
    required=True,
    type=click.Choice(["safekeeperdata", "tenant"]),
    help="safekeeperdata (peers, operators) or tenant (a proposer of one tenant).",
)
@click.option(
    "--tenant-id", type=TENANT_ID, default=None,
    help="The tenant's id (32 hex digits); needed by --scope tenant.",
)
@click.option(
    "--expires-in",
    type=DURATION,
    default="90d",
    show_default=True,
    help="Lifetime of the token (e.g. 12h, 30d, 365d); nodes refuse it afterwards.",
)
def token(private_key: Path, scope: str, tenant_id: TenantId | None, expires_in: float) -> None:
    """Sign a JWT and print it on stdout.

    Every token expires (default: 90 days): issue a new one and restart whatever reads it
    (a node's --token-file) before then.
    """
    tenant = tenant_id
    if scope == "tenant" and tenant is None:
        raise click.UsageError("--scope tenant needs --tenant-id")
    try:
        jwt = issue_token(
            private_key.read_bytes(), "tenant" if scope == "tenant" else "safekeeperdata", tenant,
            expires_in=expires_in,
        )
    except ValueError as e:
        raise click.ClickException(f"cannot sign with {private_key}: {e}") from None
    click.echo(jwt)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file with ``mode`` from the start (never world-readable, even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed or the file pre-existed
    os.replace(tmp, path)
