"""Who a subject certificate names: the subject whose enrolled consent key it points to.

A subject authenticates like any caller, with a client certificate from the credgate CA
(role ``subject``). What makes it *this* subject is not a name or an identity number in the
certificate — it carries neither — but its institution id ``subject.<k>``, where ``sk_<k>``
is the id of the consent-signing key the subject enrolled in person at an enrolment office.
The enrolment bound that key to the subject's token, so:

    certificate → key id → enrolled key (must be current) → subject token

The key must be the subject's *current* key: enrolling a new one (a lost phone) retires the
old key and with it every certificate naming it, without a revocation list. See
``docs/policy.md`` ("Self-inquiry") for the whole procedure.
"""

from __future__ import annotations

from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent.grants import KEY_ID_PREFIX, is_subject_key_id
from credgate.consent.register import ConsentRegister, EnrolledKey
from credgate.core.institution import SUBJECT_ID_PREFIX, Institution

SUBJECT_INSTITUTION_PREFIX = SUBJECT_ID_PREFIX


def subject_institution_id(key_id: str) -> str:
    """The institution id a subject certificate for enrolled key ``key_id`` carries."""
    if not is_subject_key_id(key_id):
        raise ValueError("expected a subject key id (sk_...)")
    return SUBJECT_INSTITUTION_PREFIX + key_id.removeprefix(KEY_ID_PREFIX)


def named_key_id(institution: Institution) -> str | None:
    """The enrolled key id a subject certificate names; ``None`` for any other caller."""
    if institution.role != vocab.INSTITUTION_ROLE_SUBJECT:
        return None
    suffix = institution.institution_id.removeprefix(SUBJECT_INSTITUTION_PREFIX)
    if suffix == institution.institution_id:
        return None
    key_id = KEY_ID_PREFIX + suffix
    return key_id if is_subject_key_id(key_id) else None


class SubjectCertificates:
    """Resolves subject certificates against the consent register's enrolled keys.

    Read afresh on every call (no cache), like consent: a re-enrolment retires the old key
    for the very next request on every replica.
    """

    def __init__(self, register: ConsentRegister) -> None:
        self._register = register

    async def current_key(self, institution: Institution) -> EnrolledKey | None:
        """The caller's current enrolled key, or ``None`` when the caller is no subject."""
        key_id = named_key_id(institution)
        if key_id is None:
            return None
        key = await self._register.subject_key(key_id)
        return key if key is not None and key.current else None

    async def is_subject(self, institution: Institution, subject_token: str) -> bool:
        """Whether the caller is the subject with ``subject_token`` (self-inquiry's check)."""
        key = await self.current_key(institution)
        return key is not None and key.subject_token == subject_token
