"""Scripted data providers: the mock world's sources pushing their changes to the gateway.

Each script replays one source's view of the synthetic population as the stream of updates a
real provider would have sent over time: for every subject with a bankruptcy case, one update
per state change (accepted → observation → suspended / restored / revoked), in order of the
source's as-of time, optionally followed by a nightly full snapshot. The credit registry's
script keeps the population's lagging views, so the contradiction scenarios arise on the
gateway exactly as they do in the pull path (the platform says RESTORED, the registry still
OBSERVATION); with ``resolve_lag`` the registry catches up after everything else it sent and
they clear. The catch-up updates come last, so ``--push --resolve-lag`` after a plain ``--push``
resumes where that one ended and sends just them.

``ProviderClient`` is a well-behaved provider: it asks where to resume (``SyncHello``) on
every connection, streams from there, and reconnects with backoff when the gateway goes away.
Used by the sync tests and by ``python -m credgate.adapters.mocks.providers`` (``credgate mocks
--push``). Signing keys derive from fixed seeds, so ``provider_toml`` can be written before
anything runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import hashlib
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mapping import CHINA_TZ, cny, to_date, to_timestamp
from credgate.adapters.mocks.disclosure_platform import KEY_SEED as PLATFORM_KEY_SEED
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    Population,
    Procedure,
    SourceView,
    Stage,
    State,
    Subject,
    build_population,
)
from credgate.adapters.signing import public_key_b64
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.core.channel import client_channel
from credgate.core.identity_number import mask
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update

_STATES = {s: v.RepairState.Value(f"REPAIR_STATE_{s.value}") for s in State}
_KINDS = {p: v.CaseKind.Value(f"CASE_KIND_{p.value}") for p in Procedure}
_STAGES = {s: v.CaseStage.Value(f"CASE_STAGE_{s.value}") for s in Stage}


@dataclass(frozen=True)
class ProviderScript:
    """One scripted provider: who it is, which source it writes, and how it signs."""

    institution_id: str
    source_id: str
    source_kind: v.SourceKind.ValueType
    view: SourceView
    key_seed: bytes
    display_name: str
    publish_hour: int = 18
    """Local hour at which the source publishes a day's changes (its as-of time)."""

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The deterministic Ed25519 key the provider signs updates with."""
        return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(self.key_seed).digest())

    def provider_entry(self) -> dict[str, str]:
        """The ``[[providers]]`` entry a gateway needs to accept this provider."""
        return {
            "institution_id": self.institution_id,
            "source_id": self.source_id,
            "source_kind": v.SourceKind.Name(self.source_kind).removeprefix("SOURCE_KIND_").lower(),
            "public_key": public_key_b64(self.signing_key),
        }

    def provider_toml(self) -> str:
        """``provider_entry`` as TOML, to paste into a gateway configuration."""
        lines = (f'{key} = "{value}"' for key, value in self.provider_entry().items())
        return "[[providers]]\n" + "\n".join(lines) + "\n"


PLATFORM = ProviderScript(
    "provider-disclosure",
    "disclosure-platform",
    v.SOURCE_KIND_DISCLOSURE_PLATFORM,
    SourceView.DISCLOSURE_PLATFORM,
    PLATFORM_KEY_SEED,
    "深圳市个人破产信息公开平台",
)
REGISTRY = ProviderScript(
    "provider-registry",
    "credit-registry",
    v.SOURCE_KIND_CREDIT_REGISTRY,
    SourceView.CREDIT_REGISTRY,
    b"credgate mock credit registry provider key v1",
    "征信中心个人信用信息基础数据库",
    publish_hour=23,
)
SCRIPTS = (PLATFORM, REGISTRY)


def _timeline(subject: Subject) -> list[tuple[dt.date, State]]:
    """The dated state changes of a subject's case, in order, ending at the truth."""
    case = subject.case
    assert case is not None
    dated = [
        (case.accepted_on, State.PROCEDURE_PENDING),
        (case.observation_start, State.OBSERVATION),
        (case.disclosure_suspended_on, State.DISCLOSURE_SUSPENDED),
        (case.restored_on, State.RESTORED),
        (case.revoked_on, State.REVOKED),
    ]
    return [(day, state) for day, state in dated if day is not None]


def _stage(subject: Subject, state: State) -> Stage:
    case = subject.case
    assert case is not None
    if state is subject.state:
        return case.stage
    if state is State.PROCEDURE_PENDING:
        return Stage.UNDER_TRIAL
    if state is State.RESTORED:
        return Stage.FULLY_EXECUTED
    liquidation = case.procedure is Procedure.LIQUIDATION
    return Stage.CONCLUDED if liquidation else Stage.CONCLUDED_UNDER_SUPERVISION


def source_facts(
    script: ProviderScript, subject: Subject, state: State, as_of: dt.datetime
) -> report_pb2.SourceFacts:
    """What the script's source holds about ``subject`` when it shows ``state``."""
    case = subject.case
    assert case is not None
    record_id = hashlib.sha256(f"{script.source_id}|{case.case_number}".encode()).hexdigest()
    provenance = report_pb2.Provenance(
        source_id=script.source_id,
        source_kind=script.source_kind,
        source_record_id=record_id[:16].upper(),
        source_as_of=to_timestamp(as_of),
    )
    facts = report_pb2.SourceFacts(
        source_id=script.source_id,
        source_kind=script.source_kind,
        display_name=script.display_name,
        asserted_state=_STATES[state],
        identity=report_pb2.SubjectIdentity(
            masked_identity_number=mask(subject.person.identity_number), name=subject.person.name
        ),
        provenance=provenance,
    )
    facts.cases.append(
        report_pb2.BankruptcyCase(
            case_number=case.case_number,
            kind=_KINDS[case.procedure],
            stage=_STAGES[_stage(subject, state)],
            court=case.court,
            accepted_on=to_date(case.accepted_on),
            observation_start=to_date(case.observation_start),
            observation_end=to_date(case.observation_end),
            restored_on=to_date(case.restored_on if state is State.RESTORED else None),
            provenance=provenance,
        )
    )
    for account in subject.accounts if script.view is SourceView.CREDIT_REGISTRY else ():
        if account.default_on is not None and account.default_on <= as_of.date():
            facts.records.append(
                report_pb2.CreditRecord(
                    category=v.DATA_CATEGORY_COMMERCIAL_CREDIT,
                    kind=v.RECORD_KIND_DEFAULT,
                    summary="default on a credit account",
                    amount=cny(account.balance_fen),
                    occurred_on=to_date(account.default_on),
                    open=state is not State.RESTORED,
                    provenance=provenance,
                )
            )
    return facts


def update_history(
    script: ProviderScript,
    population: Population,
    *,
    snapshot: bool = False,
    resolve_lag: bool = False,
) -> list[sync_pb2.ProviderUpdate]:
    """Every update the script's source sends, numbered from 1 in as-of order."""
    events: list[tuple[dt.datetime, str, Subject, State]] = []

    def at(day: dt.date) -> dt.datetime:
        # A few generated dates lie after the population's "today"; they happened by then.
        day = min(day, REFERENCE_TIME.date())
        return dt.datetime.combine(day, dt.time(script.publish_hour), CHINA_TZ)

    for subject in population:
        if subject.case is None:
            continue
        shown = subject.state_seen_by(script.view)
        steps = _timeline(subject)
        lagging = shown is not subject.state
        if lagging:  # a lagging view stops at the state it still shows
            shown_at = [i for i, (_, state) in enumerate(steps) if state is shown]
            steps = steps[: 1 + shown_at[0]] if shown_at else []
        number = subject.person.identity_number
        events += [(at(day), number, subject, state) for day, state in steps]
        if snapshot and steps:
            events.append(
                (at(REFERENCE_TIME.date()) + dt.timedelta(days=2), number, subject, steps[-1][1])
            )
        if resolve_lag and lagging:
            # Dated after everything else (the snapshot included), so the history with the
            # catch-up is the history without it plus these updates at the end: a provider that
            # pushed the lagging history resumes and sends exactly the catch-up.
            events.append(
                (at(REFERENCE_TIME.date()) + dt.timedelta(days=3), number, subject, subject.state)
            )
    events.sort(key=lambda event: (event[0], event[1]))
    rng = random.Random(f"{population.seed}|{script.source_id}")
    return [
        sync_pb2.ProviderUpdate(
            source_id=script.source_id,
            sequence=index,
            identity_number=number,
            idempotency_key=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            facts=source_facts(script, subject, state, as_of),
            create_time=to_timestamp(as_of),
        )
        for index, (as_of, number, subject, state) in enumerate(events, start=1)
    ]


async def push(target: str, pki_dir: Path, *, size: int, seed: int, resolve_lag: bool) -> int:
    """Run every script whose certificate exists in ``pki_dir`` against ``target``."""
    population = build_population(seed, size)
    clients = []
    for script in SCRIPTS:
        cert, key = (
            pki_dir / f"{script.institution_id}.pem",
            pki_dir / f"{script.institution_id}.key",
        )
        if not cert.exists():
            print(f"skipping {script.source_id}: no certificate {cert}", flush=True)
            continue
        history = update_history(script, population, snapshot=True, resolve_lag=resolve_lag)
        signed = [sign_update(script.signing_key, update) for update in history]
        channel = functools.partial(client_channel, target, pki_dir / "ca.pem", cert, key)
        # The batched form (SignedUpdateBatch of 256), as a provider should push a backlog.
        client = ProviderClient(channel, signed, batch_key=script.signing_key)
        clients.append((script, client, len(history)))
    reports = await asyncio.gather(*(client.run(timeout=600) for _, client, _ in clients))
    for (script, _, total), report in zip(clients, reports, strict=True):
        print(
            f"{script.source_id}: {report.acked}/{total} acknowledged, "
            f"{len(report.rejected)} rejected, {report.disconnects} reconnects",
            flush=True,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m credgate.adapters.mocks.providers --target HOST:PORT --pki-dir DIR``."""
    parser = argparse.ArgumentParser(description="push the scripted providers' updates")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--pki-dir", default="var/demo/pki")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20210301)
    parser.add_argument("--resolve-lag", action="store_true", help="the registry catches up")
    args = parser.parse_args(argv)
    return asyncio.run(
        push(
            args.target,
            Path(args.pki_dir),
            size=args.size,
            seed=args.seed,
            resolve_lag=args.resolve_lag,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
