"""``credgate keys``: data-encryption keys (rotated on one node at once, or added, promoted and
re-encrypted in three steps across replicas) and the report-signing key."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, json_flag, print_json


def cmd_keys_init(args: argparse.Namespace) -> int:
    from credgate.gateway.protection.keyring import Keyring

    keyring = Keyring.generate(Path(args.path))
    if args.json:
        print_json({"keyring": str(keyring.path), "primary_key_id": keyring.primary_key_id})
    else:
        print(f"keyring written to {keyring.path} (primary data key {keyring.primary_key_id})")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.data_key_rotation import rotate_keys
    from credgate.gateway.progress import Progress

    config = load_config(Path(args.config))
    with Progress("re-encrypting", enabled=args.progress, unit="records") as progress:
        key_id, count = asyncio.run(rotate_keys(config, progress=progress))
    if args.json:
        print_json({"primary_key_id": key_id, "reencrypted": count})
    else:
        print(f"new primary data key {key_id}; re-encrypted {count} records")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.data_key_rotation import add_data_key

    key_id = add_data_key(load_config(Path(args.config)), primary=args.primary)
    if args.json:
        print_json({"key_id": key_id, "primary": args.primary})
    elif args.primary:
        print(f"new primary data key {key_id}; run credgate keys reencrypt")
    else:
        print(
            f"new data key {key_id}, not yet primary: copy this keyring to every replica (no "
            f"restart: they take it up), then run credgate keys promote {key_id}"
        )
    return EXIT_OK


def cmd_keys_promote(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.data_key_rotation import promote_data_key
    from credgate.gateway.protection.keyring import UnknownKeyError

    try:
        promote_data_key(load_config(Path(args.config)), args.key_id)
    except UnknownKeyError as error:
        raise ValueError(str(error)) from None  # a mistyped id: a usage error
    if args.json:
        print_json({"primary_key_id": args.key_id})
    else:
        print(
            f"{args.key_id} is the primary data key: copy this keyring to every replica (each "
            "writes under it within [keys] reload_seconds), then run credgate keys reencrypt"
        )
    return EXIT_OK


def cmd_keys_reencrypt(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.data_key_rotation import reencrypt_records
    from credgate.gateway.progress import Progress

    config = load_config(Path(args.config))
    with Progress("re-encrypting", enabled=args.progress, unit="records") as progress:
        count = asyncio.run(reencrypt_records(config, progress=progress))
    if args.json:
        print_json({"reencrypted": count})
    else:
        print(f"re-encrypted {count} records" + ("" if count else "; nothing is left to move"))
    return EXIT_OK


def cmd_keys_rotate_signing(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.report_signing_keys import (
        FILE_NAME,
        load_or_create_signing_keys,
        rotate_signing_key,
    )

    config = load_config(Path(args.config))
    path = config.storage.data_dir / FILE_NAME
    created = not path.exists()
    if created:  # the first key: what the first gateway start would create, made ahead of it
        key_id = load_or_create_signing_keys(path).current_key_id
    else:
        key_id = rotate_signing_key(path)
    if args.json:
        print_json({"key_id": key_id, "created": created, "file": str(path)})
    elif created:
        print(f"created {path} with report-signing key {key_id}")
    else:
        print(f"new report-signing key {key_id}; old keys stay published for verification")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``keys`` and its subcommands to ``credgate``'s subcommands."""
    from credgate.gateway.progress import add_progress_argument

    keys = command(
        subparsers,
        "keys",
        help="data-encryption and report-signing keys",
        examples=[
            "credgate keys rotate --config /etc/credgate/gateway.toml",
            "credgate keys rotate-signing --config /etc/credgate/gateway.toml",
        ],
    ).add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = command(
        keys,
        "init",
        help="create a keyring file (data keys and the subject-token key)",
        examples=["credgate keys init --path /etc/credgate/keyring.json"],
    )
    p.add_argument("--path", required=True, help="keyring file to create")
    json_flag(p)
    p.set_defaults(func=cmd_keys_init)
    p = command(
        keys,
        "rotate",
        help="new primary data key; re-encrypt every record under it (one node)",
        examples=[
            "credgate keys rotate --config var/demo/gateway.toml",
            "credgate keys rotate --config /etc/credgate/gateway.toml --progress --json",
        ],
        description="Add a new primary data key and re-encrypt every record under it, in one "
        "go. With several replicas use keys add, promote and reencrypt instead, so every "
        "replica can read a key before any writes with it (docs/deployment.md).",
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    add_progress_argument(p)
    json_flag(p)
    p.set_defaults(func=cmd_keys_rotate)
    p = command(
        keys,
        "add",
        help="add a data key to the keyring, not yet primary (rotation step 1 of 3)",
        examples=["credgate keys add --config /etc/credgate/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    p.add_argument("--primary", action="store_true", help="make it the primary at once")
    json_flag(p)
    p.set_defaults(func=cmd_keys_add)
    p = command(
        keys,
        "promote",
        help="make a data key the primary (rotation step 2 of 3)",
        examples=["credgate keys promote --config /etc/credgate/gateway.toml dek_0123456789ab"],
    )
    p.add_argument("key_id", help="a data key id in the keyring (from credgate keys add)")
    p.add_argument("--config", required=True, help="the gateway's config file")
    json_flag(p)
    p.set_defaults(func=cmd_keys_promote)
    p = command(
        keys,
        "reencrypt",
        help="re-encrypt every record under the primary data key (rotation step 3 of 3)",
        examples=["credgate keys reencrypt --config /etc/credgate/gateway.toml --progress"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    add_progress_argument(p)
    json_flag(p)
    p.set_defaults(func=cmd_keys_reencrypt)
    p = command(
        keys,
        "rotate-signing",
        help="new report-signing key (old public keys stay published); creates the first",
        examples=["credgate keys rotate-signing --config var/demo/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    json_flag(p)
    p.set_defaults(func=cmd_keys_rotate_signing)
