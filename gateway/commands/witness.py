"""``credgate witness keygen|serve|show``: the regulator's own witness of the audit log.

``keygen`` makes the witness's Ed25519 cosigner key (the private key file, mode 0600, and the
verifier key beside it, ``<file>.pub``, which the gateway's ``[audit] witnesses`` and
``credgate audit verify --witness-key`` take). ``serve`` runs the tlog-witness HTTP service
(``gateway.witness.server``) for the logs given by ``--log`` (each log's verifier key, e.g. the
gateway's ``audit-log.pub``: its name is the log's origin). ``show`` prints the state kept in
``--state`` (what was cosigned, and the refusals) without the server running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, json_flag


def _write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600, refusing to overwrite an existing key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new cosigner key and its verifier key; print the verifier key."""
    from credgate.audit.cosignature import Cosigner

    cosigner = Cosigner.generate(args.name)
    key = Path(args.out)
    _write_secret(key, cosigner.to_skey())
    Path(f"{key}.pub").write_text(cosigner.verifier.to_vkey() + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({"verifier_key": cosigner.verifier.to_vkey(), "key_file": str(key)}))
    else:
        print(cosigner.verifier.to_vkey())
    return EXIT_OK


def _load(args: argparse.Namespace) -> Any:
    from credgate.audit.cosignature import Cosigner
    from credgate.audit.log_signing_key import load_verifier
    from credgate.audit.witness import Witness, WitnessState

    key = Path(args.key)
    if key.stat().st_mode & 0o077:
        raise ValueError(f"{key} is readable by others; chmod 600 it")
    cosigner = Cosigner.from_skey(key.read_text(encoding="utf-8"))
    logs = [load_verifier(text) for text in args.log]
    if not logs:
        raise ValueError("give at least one --log (the log's verifier key or its file)")
    return Witness(cosigner, logs, WitnessState(Path(args.state)))


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from credgate.gateway.witness.server import run_witness, server_tls

    witness = _load(args)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("--listen must be host:port")
    tls = server_tls(
        Path(args.tls_cert) if args.tls_cert else None,
        Path(args.tls_key) if args.tls_key else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_witness(witness, host.strip("[]"), int(port), tls))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print the witness's state."""
    from credgate.gateway.witness.server import witness_status

    status = witness_status(_load(args))
    if args.json:
        print(json.dumps(status))
        return EXIT_OK
    print(f"witness {status['witness']}")
    for entry in status["logs"]:  # type: ignore[attr-defined]
        print(f"  {entry['origin']}: cosigned size {entry['cosigned_size']}")
        for refusal in entry["refusals"]:
            print(
                f"    refused HTTP {refusal['status']} size {refusal['tree_size']} "
                f"(old {refusal['old_size']}): {refusal['reason']}"
            )
    return EXIT_OK


def _witness_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", required=True, help="the witness's cosigner key file (keygen)")
    p.add_argument("--state", required=True, help="directory of the witness's durable state")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        help="a log to witness: its verifier key or key file (repeatable; name = origin)",
    )


def register(subparsers: Any) -> None:
    """Add ``witness`` and its subcommands to ``credgate``'s subcommands."""
    witness = command(
        subparsers,
        "witness",
        help="a C2SP tlog-witness for audit logs, run by a regulator with its own key",
        examples=[
            "credgate witness keygen --name witness.regulator.example/w1 --out witness.key",
            "credgate witness serve --key witness.key --state var/witness "
            "--listen 127.0.0.1:8700 --log var/demo/data/audit-log.pub",
        ],
    ).add_subparsers(dest="witness_command", required=True)
    p = command(
        witness,
        "keygen",
        help="create the witness's Ed25519 cosigner key and print its verifier key",
        examples=["credgate witness keygen --name witness.regulator.example/w1 --out witness.key"],
    )
    p.add_argument("--name", required=True, help="the witness's key name, e.g. a host/path")
    p.add_argument("--out", required=True, help="key file to create (the .pub goes beside it)")
    json_flag(p, "the verifier key")
    p.set_defaults(func=cmd_keygen)
    p = command(
        witness,
        "serve",
        help="serve add-checkpoint and the cosigned checkpoints over HTTP(S)",
        examples=[
            "credgate witness serve --key witness.key --state var/witness "
            "--listen 127.0.0.1:8700 --log var/demo/data/audit-log.pub",
            "credgate witness serve --key witness.key --state /var/lib/credgate-witness "
            "--listen 0.0.0.0:8443 --tls-cert witness.pem --tls-key witness-tls.key "
            "--log audit-log.pub",
        ],
    )
    _witness_args(p)
    p.add_argument("--listen", default="127.0.0.1:8700", help="host:port (default %(default)s)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (required off loopback)")
    p.add_argument("--tls-key", help="the certificate's private key")
    p.set_defaults(func=cmd_serve)
    p = command(
        witness,
        "show",
        help="print what the witness cosigned and refused, from its state directory",
        examples=[
            "credgate witness show --key witness.key --state var/witness --log audit-log.pub"
        ],
    )
    _witness_args(p)
    json_flag(p, "the state")
    p.set_defaults(func=cmd_show)
