"""The ordering rules on their own (``gateway.sync.plan.decide``): pure, no database."""

from __future__ import annotations

import datetime as dt

from credgate.gateway.sync.plan import Earlier, Outcome, Resolution, decide
from credgate.gateway.sync.validate import Accepted, Prepared, Rejection

NOW = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
_CIPHERTEXT = b"\x01\x03k-1" + bytes(12 + 16)  # a well-formed envelope; never decrypted here


def _update(sequence: int, key: str = "") -> Prepared:
    accepted = Accepted(
        subject_token="st_" + "a" * 32,
        idempotency_digest=key or f"digest-{sequence}",
        source_kind=1,
        source_as_of=NOW,
        facts_ciphertext=_CIPHERTEXT,
        identity_ciphertext=_CIPHERTEXT,
        original_ciphertext=_CIPHERTEXT,
    )
    return Prepared(sequence, NOW, accepted)


def _refused(sequence: int, reason: str = "SIGNATURE_INVALID") -> Prepared:
    return Prepared(sequence, NOW, Rejection(reason, "refused"))


def _outcomes(resolutions: list[Resolution]) -> list[tuple[int, str]]:
    return [(r.sequence, r.outcome.value) for r in resolutions]


def test_in_order_updates_advance_the_cursor_and_rejections_consume_their_number() -> None:
    plan = decide([_update(4), _refused(5), _update(6)], 3, {}, {})
    assert plan.cursor == 6
    assert _outcomes(plan.resolutions) == [(4, "APPLIED"), (5, "REJECTED"), (6, "APPLIED")]
    assert [row["outcome"] for row in plan.journal] == ["APPLIED", "REJECTED", "APPLIED"]
    assert [seq for seq, _, _ in plan.applied] == [4, 6]


def test_a_gap_is_not_applied_until_the_expected_number_arrives_in_the_same_batch() -> None:
    plan = decide([_update(2), _update(1), _update(2)], 0, {}, {})
    assert plan.resolutions[0] == Resolution(2, Outcome.GAP, expected_sequence=1)
    assert _outcomes(plan.resolutions)[1:] == [(1, "APPLIED"), (2, "APPLIED")]
    assert plan.cursor == 2


def test_a_number_repeated_within_a_batch_is_a_duplicate_of_itself() -> None:
    plan = decide([_update(1), _update(1)], 0, {}, {})
    assert plan.resolutions[1] == Resolution(1, Outcome.DUPLICATE, original_sequence=1)
    assert len(plan.journal) == 1


def test_an_idempotency_key_seen_before_makes_a_new_number_a_duplicate() -> None:
    plan = decide([_update(8, key="k"), _update(9, key="k")], 7, {}, {"k": 3})
    assert plan.resolutions == [
        Resolution(8, Outcome.DUPLICATE, original_sequence=3),
        Resolution(9, Outcome.DUPLICATE, original_sequence=3),
    ]
    assert plan.applied == []
    assert plan.cursor == 9


def test_replays_are_answered_from_history_and_never_resolved_again() -> None:
    earlier = {
        1: Earlier("APPLIED", None, 1, "digest-1"),
        2: Earlier("REJECTED", "SIGNATURE_INVALID", 2, None),
        3: Earlier("DUPLICATE", None, 1, "digest-1"),
    }
    plan = decide(
        [_update(1), _update(2), _update(3, key="digest-1"), _update(1, key="other")],
        5,
        earlier,
        {},
    )
    assert plan.cursor == 5
    assert plan.journal == []
    assert plan.resolutions[0] == Resolution(1, Outcome.DUPLICATE, original_sequence=1)
    assert plan.resolutions[1].reason == "SEQUENCE_ALREADY_USED"
    assert plan.resolutions[2] == Resolution(3, Outcome.DUPLICATE, original_sequence=1)
    assert plan.resolutions[3].reason == "SEQUENCE_ALREADY_USED"


def test_an_update_without_a_number_is_rejected_and_consumes_nothing() -> None:
    plan = decide([_refused(0, "REQUEST_EMPTY"), _update(1)], 0, {}, {})
    assert _outcomes(plan.resolutions) == [(0, "REJECTED"), (1, "APPLIED")]
    assert [row["sequence"] for row in plan.journal] == [1]
