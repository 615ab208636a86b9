"""``credgate mocks`` and ``credgate scenarios``: the mock sources and the named subjects of
their world."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, json_flag, print_json


def cmd_mocks(args: argparse.Namespace) -> int:
    from credgate.adapters.mocks.serve import MockRunSettings, parse_fault, run_mocks

    if args.push:
        from credgate.adapters.mocks.providers import push

        return asyncio.run(
            push(
                args.push,
                Path(args.pki_dir),
                size=args.size,
                seed=args.seed,
                resolve_lag=args.resolve_lag,
            )
        )
    faults = dict(parse_fault(text) for text in args.fault)
    settings = MockRunSettings(
        host=args.host,
        base_port=args.base_port,
        control_port=args.control_port,
        size=args.size,
        seed=args.seed,
    )
    asyncio.run(run_mocks(settings, faults))
    return EXIT_OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    from credgate.adapters.mocks.population import build_population

    scenarios = build_population(size=0).scenarios
    if args.json:
        print_json(
            [
                {
                    "scenario": name,
                    "identity_number": subject.person.identity_number,
                    "truth": subject.state.value,
                }
                for name, subject in scenarios.items()
            ]
        )
        return EXIT_OK
    for name, subject in scenarios.items():
        print(f"{name:<28} {subject.person.identity_number}  truth: {subject.state.value}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``mocks`` and ``scenarios`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "mocks",
        help="run every mock source on loopback (or push provider update streams)",
        examples=[
            "credgate mocks",
            "credgate mocks --fault bank-qianhai:latency_ms=300,error_rate=0.1",
            "credgate mocks --push 127.0.0.1:50051 --pki-dir var/demo/pki",
        ],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--base-port", type=int, default=7801, help="first source port (7801)")
    p.add_argument("--control-port", type=int, default=7900, help="fault control port (7900)")
    p.add_argument("--size", type=int, default=10_000, help="population size")
    p.add_argument("--seed", type=int, default=20210301, help="population seed")
    p.add_argument(
        "--push",
        metavar="GATEWAY",
        default="",
        help="instead of serving, push the scripted provider update streams to a gateway",
    )
    p.add_argument("--pki-dir", default="var/demo/pki", help="provider certificates (--push)")
    p.add_argument(
        "--resolve-lag",
        action="store_true",
        help="(--push) end with the registry catching up, clearing the lag contradiction",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SOURCE:name=value,...",
        help="initial fault settings",
    )
    p.set_defaults(func=cmd_mocks)

    p = command(
        subparsers,
        "scenarios",
        help="list the named scenario subjects of the mock world",
        examples=["credgate scenarios", "credgate scenarios --json"],
    )
    json_flag(p, "the list")
    p.set_defaults(func=cmd_scenarios)
