"""The synthetic population every mock source serves, and the named scenario subjects.

One seeded generator is the single truth; each mock source renders its own (possibly lagging)
view of it in its native format. That is what makes the mocks useful for integration: the
sources disagree only where a scenario says they do, so a test can predict every answer.

Nothing here is real personal data. Identity numbers are valid GB 11643 numbers (region code,
birth date, check character) built from a seeded generator; names are drawn from common
surnames and given-name characters, including characters that exist only in GB18030 (not in
GB2312/GBK), so encoding mistakes in adapters show up.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache

from credgate.core.identity_number import check_character

DEFAULT_SEED = 20210301  # the Shenzhen regulations took effect on 2021-03-01
DEFAULT_SIZE = 10_000
REFERENCE_DATE = dt.date(2026, 11, 1)
"""The population's "today": fixed so every run renders the same records and as-of times."""
REFERENCE_TIME = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)

COURT = "深圳市中级人民法院"
BANK_IDS = ("bank-qianhai", "bank-pengcheng")

_REGIONS = (
    "440303",
    "440304",
    "440305",
    "440306",
    "440307",
    "440308",
    "440309",
    "440310",
    "440311",
    "110101",
    "310115",
    "430102",
    "450103",
    "360102",
    "510107",
)
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许"
    "韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红建文辉力宇浩然子轩梓涵欣怡堃喆燊昇祎"
)
_GB18030_ONLY = "䶮䲜㛃"  # CJK Extension A: encodable in GB18030, absent from GBK
_PRODUCTS = ("consumer_loan", "credit_card", "mortgage", "business_loan")


class State(StrEnum):
    """The unified repair state, as the truth of the synthetic world."""

    NO_RECORD = "NO_RECORD"
    PROCEDURE_PENDING = "PROCEDURE_PENDING"
    OBSERVATION = "OBSERVATION"
    DISCLOSURE_SUSPENDED = "DISCLOSURE_SUSPENDED"
    RESTORED = "RESTORED"
    REVOKED = "REVOKED"


class Procedure(StrEnum):
    LIQUIDATION = "LIQUIDATION"
    REORGANIZATION = "REORGANIZATION"
    RECONCILIATION = "RECONCILIATION"


class Stage(StrEnum):
    ACCEPTED = "ACCEPTED"
    UNDER_TRIAL = "UNDER_TRIAL"
    CONCLUDED_UNDER_SUPERVISION = "CONCLUDED_UNDER_SUPERVISION"
    CONCLUDED = "CONCLUDED"
    FULLY_EXECUTED = "FULLY_EXECUTED"


class SourceView(StrEnum):
    """The source kinds whose view of a subject a scenario can make lag behind the truth."""

    DISCLOSURE_PLATFORM = "disclosure_platform"
    CREDIT_REGISTRY = "credit_registry"
    BANK = "bank"
    COURT = "court"


@dataclass(frozen=True)
class Person:
    identity_number: str
    name: str
    birth_date: dt.date


@dataclass(frozen=True)
class Case:
    case_number: str
    procedure: Procedure
    stage: Stage
    accepted_on: dt.date
    observation_start: dt.date | None = None
    observation_end: dt.date | None = None
    disclosure_suspended_on: dt.date | None = None
    restored_on: dt.date | None = None
    revoked_on: dt.date | None = None
    court: str = COURT


@dataclass(frozen=True)
class Account:
    bank_id: str
    account_id: str
    product: str
    opened_on: dt.date
    credit_limit_fen: int
    balance_fen: int
    default_on: dt.date | None = None
    in_bankruptcy: bool = False
    closed_on: dt.date | None = None


@dataclass(frozen=True)
class PlanRepayment:
    bank_id: str
    paid_on: dt.date
    amount_fen: int


@dataclass(frozen=True)
class TaxArrears:
    record_id: str
    assessed_on: dt.date
    amount_fen: int
    settled_on: dt.date | None


@dataclass(frozen=True)
class SocialInsurance:
    record_id: str
    employer: str
    first_month: dt.date
    last_paid_month: dt.date
    arrears_fen: int


@dataclass(frozen=True)
class Penalty:
    record_id: str
    authority: str
    decided_on: dt.date
    amount_fen: int
    reason_code: str


@dataclass(frozen=True)
class Litigation:
    case_number: str
    kind: str
    filed_on: dt.date
    closed_on: dt.date | None


@dataclass(frozen=True)
class BusinessRole:
    enterprise_name: str
    credit_code: str
    role: str
    since: dt.date


@dataclass(frozen=True)
class Subject:
    person: Person
    state: State
    case: Case | None = None
    accounts: tuple[Account, ...] = ()
    repayments: tuple[PlanRepayment, ...] = ()
    tax_arrears: tuple[TaxArrears, ...] = ()
    social_insurance: tuple[SocialInsurance, ...] = ()
    penalties: tuple[Penalty, ...] = ()
    litigation: tuple[Litigation, ...] = ()
    business_roles: tuple[BusinessRole, ...] = ()
    lagging_views: Mapping[SourceView, State] = field(default_factory=dict)
    """Sources that still show an older state than the truth (the contradiction scenarios)."""
    scenario: str | None = None

    def state_seen_by(self, view: SourceView) -> State:
        """The state a source of this kind reports, lag included."""
        return self.lagging_views.get(view, self.state)

    def accounts_at(self, bank_id: str) -> tuple[Account, ...]:
        return tuple(a for a in self.accounts if a.bank_id == bank_id)


def make_identity_number(region: str, birth: dt.date, sequence: int) -> str:
    """A valid GB 11643 number; ``sequence`` is the 3-digit order code (odd for men)."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + check_character(first17)


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _scenario_subjects() -> list[Subject]:
    """The named subjects documented in the README, one per situation integrators must handle."""
    restored_case = Case(
        "(2021)粤03破申31号",
        Procedure.REORGANIZATION,
        Stage.FULLY_EXECUTED,
        _d("2021-07-19"),
        observation_start=_d("2021-11-01"),
        observation_end=_d("2024-10-31"),
        restored_on=_d("2024-11-01"),
    )
    return [
        Subject(
            Person(
                make_identity_number("440305", _d("1978-05-12"), 31), "陈建华", _d("1978-05-12")
            ),
            State.RESTORED,
            restored_case,
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0001",
                    "business_loan",
                    _d("2016-03-01"),
                    50_000_000,
                    0,
                    default_on=_d("2020-06-30"),
                    in_bankruptcy=True,
                    closed_on=_d("2024-10-31"),
                ),
                Account(
                    "bank-pengcheng", "PC-0001", "credit_card", _d("2025-02-01"), 2_000_000, 120_000
                ),
            ),
            repayments=tuple(
                PlanRepayment(
                    "bank-qianhai", _d(f"{2022 + i // 4}-{1 + 3 * (i % 4):02d}-15"), 2_500_000
                )
                for i in range(12)
            ),
            business_roles=(
                BusinessRole(
                    "深圳市南山区建华贸易有限公司",
                    "91440300MA5G1ABC2X",
                    "legal_representative",
                    _d("2025-05-20"),
                ),
            ),
            scenario="restored_reorganization",
        ),
        Subject(
            Person(
                make_identity_number("440304", _d("1985-11-03"), 42), "李秀英", _d("1985-11-03")
            ),
            State.OBSERVATION,
            Case(
                "(2023)粤03破申8号",
                Procedure.LIQUIDATION,
                Stage.CONCLUDED,
                _d("2023-03-02"),
                observation_start=_d("2023-09-01"),
                observation_end=_d("2028-08-31"),
            ),
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0002",
                    "consumer_loan",
                    _d("2019-04-10"),
                    30_000_000,
                    28_500_000,
                    default_on=_d("2022-01-31"),
                    in_bankruptcy=True,
                ),
            ),
            tax_arrears=(TaxArrears("TX-2022-0042", _d("2022-05-31"), 1_280_000, None),),
            litigation=(
                Litigation(
                    "(2022)粤0304民初1107号", "loan_dispute", _d("2022-03-14"), _d("2022-09-30")
                ),
            ),
            scenario="observation",
        ),
        Subject(
            Person(make_identity_number("440306", _d("1990-02-27"), 15), "王磊", _d("1990-02-27")),
            State.DISCLOSURE_SUSPENDED,
            Case(
                "(2022)粤03破申19号",
                Procedure.LIQUIDATION,
                Stage.CONCLUDED,
                _d("2022-04-11"),
                observation_start=_d("2022-10-01"),
                observation_end=_d("2027-09-30"),
                disclosure_suspended_on=_d("2025-06-10"),
            ),
            accounts=(
                Account(
                    "bank-pengcheng",
                    "PC-0003",
                    "consumer_loan",
                    _d("2018-08-08"),
                    15_000_000,
                    9_000_000,
                    default_on=_d("2021-07-31"),
                    in_bankruptcy=True,
                ),
            ),
            social_insurance=(
                SocialInsurance(
                    "SI-440306-0015",
                    "深圳市宝安区某物流有限公司",
                    _d("2019-01-01"),
                    _d("2026-10-01"),
                    0,
                ),
            ),
            scenario="disclosure_suspended",
        ),
        Subject(
            Person(make_identity_number("440307", _d("1982-09-09"), 27), "张伟", _d("1982-09-09")),
            State.PROCEDURE_PENDING,
            Case(
                "(2026)粤03破申77号", Procedure.RECONCILIATION, Stage.UNDER_TRIAL, _d("2026-09-15")
            ),
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0004",
                    "credit_card",
                    _d("2017-01-20"),
                    5_000_000,
                    4_950_000,
                    default_on=_d("2026-03-31"),
                ),
                Account(
                    "bank-pengcheng",
                    "PC-0004",
                    "consumer_loan",
                    _d("2020-02-02"),
                    20_000_000,
                    18_000_000,
                    default_on=_d("2026-04-30"),
                ),
            ),
            penalties=(
                Penalty(
                    "MS-2025-0311",
                    "深圳市市场监督管理局龙岗监管局",
                    _d("2025-11-12"),
                    500_000,
                    "LICENSE_VIOLATION",
                ),
            ),
            scenario="procedure_pending",
        ),
        Subject(
            Person(make_identity_number("440303", _d("1995-06-18"), 64), "刘芳", _d("1995-06-18")),
            State.NO_RECORD,
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0005",
                    "mortgage",
                    _d("2021-12-01"),
                    180_000_000,
                    150_000_000,
                ),
            ),
            social_insurance=(
                SocialInsurance(
                    "SI-440303-0064",
                    "深圳市罗湖区某科技有限公司",
                    _d("2018-07-01"),
                    _d("2026-10-01"),
                    0,
                ),
            ),
            scenario="no_record",
        ),
        Subject(
            Person(
                make_identity_number("440309", _d("1976-12-30"), 53), "黄志强", _d("1976-12-30")
            ),
            State.RESTORED,
            Case(
                "(2021)粤03破申55号",
                Procedure.RECONCILIATION,
                Stage.FULLY_EXECUTED,
                _d("2021-10-08"),
                observation_start=_d("2022-01-01"),
                observation_end=_d("2025-12-31"),
                restored_on=_d("2025-12-31"),
            ),
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0006",
                    "business_loan",
                    _d("2015-05-05"),
                    80_000_000,
                    0,
                    default_on=_d("2021-02-28"),
                    in_bankruptcy=True,
                    closed_on=_d("2025-12-31"),
                ),
            ),
            lagging_views={SourceView.CREDIT_REGISTRY: State.OBSERVATION},
            scenario="contradicted_registry_lag",
        ),
        Subject(
            Person(make_identity_number("440311", _d("1980-03-15"), 77), "赵刚", _d("1980-03-15")),
            State.REVOKED,
            Case(
                "(2021)粤03破申40号",
                Procedure.LIQUIDATION,
                Stage.CONCLUDED,
                _d("2021-08-20"),
                observation_start=_d("2022-02-01"),
                observation_end=_d("2027-01-31"),
                revoked_on=_d("2026-03-18"),
            ),
            accounts=(
                Account(
                    "bank-pengcheng",
                    "PC-0007",
                    "business_loan",
                    _d("2014-09-09"),
                    60_000_000,
                    60_000_000,
                    default_on=_d("2020-12-31"),
                    in_bankruptcy=True,
                ),
            ),
            litigation=(
                Litigation(
                    "(2026)粤03执异12号", "exemption_revocation", _d("2026-01-05"), _d("2026-03-18")
                ),
            ),
            scenario="revoked",
        ),
        Subject(
            Person(make_identity_number("440310", _d("1988-08-08"), 88), "龚䶮", _d("1988-08-08")),
            State.OBSERVATION,
            Case(
                "(2024)粤03破申3号",
                Procedure.REORGANIZATION,
                Stage.CONCLUDED_UNDER_SUPERVISION,
                _d("2024-01-22"),
                observation_start=_d("2024-06-01"),
                observation_end=_d("2027-05-31"),
            ),
            accounts=(
                Account(
                    "bank-pengcheng",
                    "PC-0008",
                    "consumer_loan",
                    _d("2019-10-10"),
                    10_000_000,
                    6_000_000,
                    default_on=_d("2023-06-30"),
                    in_bankruptcy=True,
                ),
            ),
            repayments=tuple(
                PlanRepayment(
                    "bank-pengcheng", _d(f"{2024 + i // 4}-{1 + 3 * (i % 4):02d}-10"), 500_000
                )
                for i in range(2, 10)
            ),
            scenario="gb18030_name",
        ),
        # Liquidation concluded, the 5-year observation begun in 2024 and the publication of
        # dishonest behaviour still running; the estate's default predates the observation, and a
        # liquidation has no plan: eligible to have the disclosure stopped (not yet to be
        # exempted: the period runs to 2029).
        Subject(
            Person(
                make_identity_number("440305", _d("1987-04-21"), 36), "孙丽娟", _d("1987-04-21")
            ),
            State.OBSERVATION,
            Case(
                "(2024)粤03破申12号",
                Procedure.LIQUIDATION,
                Stage.CONCLUDED,
                _d("2024-02-19"),
                observation_start=_d("2024-08-01"),
                observation_end=_d("2029-07-31"),
            ),
            accounts=(
                Account(
                    "bank-qianhai",
                    "QH-6222-0009",
                    "consumer_loan",
                    _d("2018-05-05"),
                    20_000_000,
                    17_600_000,
                    default_on=_d("2023-09-30"),
                    in_bankruptcy=True,
                ),
            ),
            scenario="stop_disclosure_eligible",
        ),
        # Liquidation concluded, the 5-year observation 2021-06-01 to 2026-05-31 elapsed with no
        # new default, still shown as OBSERVATION: waiting to be marked exempted (and, its
        # publication running, eligible to have the disclosure stopped too).
        Subject(
            Person(
                make_identity_number("440308", _d("1979-10-02"), 51), "周文涛", _d("1979-10-02")
            ),
            State.OBSERVATION,
            Case(
                "(2021)粤03破申9号",
                Procedure.LIQUIDATION,
                Stage.CONCLUDED,
                _d("2021-03-15"),
                observation_start=_d("2021-06-01"),
                observation_end=_d("2026-05-31"),
            ),
            accounts=(
                Account(
                    "bank-pengcheng",
                    "PC-0010",
                    "business_loan",
                    _d("2015-03-03"),
                    40_000_000,
                    36_000_000,
                    default_on=_d("2020-11-30"),
                    in_bankruptcy=True,
                ),
            ),
            scenario="exemption_eligible",
        ),
    ]


SCENARIO_NAMES = (
    "restored_reorganization",
    "observation",
    "disclosure_suspended",
    "procedure_pending",
    "no_record",
    "contradicted_registry_lag",
    "revoked",
    "gb18030_name",
    "stop_disclosure_eligible",
    "exemption_eligible",
)


@dataclass(frozen=True)
class Population:
    """All subjects by identity number; the scenario subjects are part of it."""

    seed: int
    subjects: Mapping[str, Subject]
    scenarios: Mapping[str, Subject]

    def get(self, identity_number: str) -> Subject | None:
        return self.subjects.get(identity_number)

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects.values())


class _Generator:
    """Draws the background population. Kept apart so scenario subjects stay hand-written."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.case_counter = 100

    def person(self, taken: set[str]) -> Person:
        rng = self.rng
        while True:
            birth = dt.date(1955, 1, 1) + dt.timedelta(days=rng.randrange(365 * 46))
            number = make_identity_number(rng.choice(_REGIONS), birth, rng.randrange(1, 1000))
            if number not in taken:
                taken.add(number)
                break
        given_pool = _GIVEN + (_GB18030_ONLY if rng.random() < 0.02 else "")
        given = "".join(rng.choice(given_pool) for _ in range(rng.choice((1, 2))))
        return Person(number, rng.choice(_SURNAMES) + given, birth)

    def accounts(self, index: int, default_before: dt.date | None) -> tuple[Account, ...]:
        rng = self.rng
        accounts = []
        for n in range(rng.randrange(0, 4)):
            bank_id = rng.choice(BANK_IDS)
            opened = dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(365 * 14))
            limit = rng.randrange(10, 500) * 100_000
            in_estate = default_before is not None and n == 0
            if in_estate and default_before:
                # The estate's account defaulted before the case and was opened before that.
                estate_default = default_before - dt.timedelta(days=rng.randrange(30, 400))
                opened = estate_default - dt.timedelta(days=rng.randrange(180, 3000))
                default_on: dt.date | None = estate_default
            else:
                default_on = opened + dt.timedelta(days=400) if rng.random() < 0.03 else None
            prefix = "QH-6222-" if bank_id == "bank-qianhai" else "PC-"
            accounts.append(
                Account(
                    bank_id,
                    f"{prefix}{index:05d}{n}",
                    rng.choice(_PRODUCTS),
                    opened,
                    limit,
                    rng.randrange(0, limit + 1),
                    default_on=default_on,
                    in_bankruptcy=in_estate,
                )
            )
        return tuple(accounts)

    def case(self, state: State) -> Case:
        rng = self.rng
        self.case_counter += 1
        procedure = rng.choice(list(Procedure))
        accepted = dt.date(2021, 3, 1) + dt.timedelta(days=rng.randrange(365 * 5))
        number = f"({accepted.year})粤03破申{self.case_counter}号"
        if state is State.PROCEDURE_PENDING:
            return Case(
                number, procedure, rng.choice((Stage.ACCEPTED, Stage.UNDER_TRIAL)), accepted
            )
        start = accepted + dt.timedelta(days=rng.randrange(90, 240))
        years = 5 if procedure is Procedure.LIQUIDATION else 3
        end = start.replace(year=start.year + years) - dt.timedelta(days=1)
        stage = (
            Stage.CONCLUDED
            if procedure is Procedure.LIQUIDATION
            else Stage.CONCLUDED_UNDER_SUPERVISION
        )
        if state is State.RESTORED:
            return Case(
                number,
                procedure,
                Stage.FULLY_EXECUTED,
                accepted,
                start,
                end,
                restored_on=min(end + dt.timedelta(days=1), REFERENCE_DATE),
            )
        if state is State.DISCLOSURE_SUSPENDED:
            return Case(
                number,
                procedure,
                stage,
                accepted,
                start,
                end,
                disclosure_suspended_on=start + dt.timedelta(days=rng.randrange(200, 500)),
            )
        if state is State.REVOKED:
            return Case(
                number,
                procedure,
                stage,
                accepted,
                start,
                end,
                revoked_on=start + dt.timedelta(days=rng.randrange(100, 600)),
            )
        return Case(number, procedure, stage, accepted, start, end)

    def subject(self, index: int, taken: set[str]) -> Subject:
        rng = self.rng
        person = self.person(taken)
        roll = rng.random()
        state = (
            State.NO_RECORD
            if roll < 0.9
            else State.OBSERVATION
            if roll < 0.95
            else State.RESTORED
            if roll < 0.97
            else State.PROCEDURE_PENDING
            if roll < 0.98
            else State.DISCLOSURE_SUSPENDED
            if roll < 0.99
            else State.REVOKED
        )
        case = None if state is State.NO_RECORD else self.case(state)
        accounts = self.accounts(index, case.accepted_on if case else None)
        tax = (
            (
                TaxArrears(
                    f"TX-{index:06d}",
                    dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(2000)),
                    rng.randrange(1, 500) * 10_000,
                    None,
                ),
            )
            if rng.random() < 0.02
            else ()
        )
        insurance = (
            (
                SocialInsurance(
                    f"SI-{index:06d}",
                    "深圳市某有限公司",
                    dt.date(2015, 1, 1),
                    dt.date(2026, 10, 1),
                    0,
                ),
            )
            if rng.random() < 0.6
            else ()
        )
        return Subject(person, state, case, accounts, tax_arrears=tax, social_insurance=insurance)


@cache
def build_population(seed: int = DEFAULT_SEED, size: int = DEFAULT_SIZE) -> Population:
    """The same ``seed`` and ``size`` always give the same population (cached per process)."""
    scenarios = {s.scenario: s for s in _scenario_subjects() if s.scenario}
    subjects: dict[str, Subject] = {s.person.identity_number: s for s in scenarios.values()}
    taken = set(subjects)
    generator = _Generator(seed)
    for index in range(max(0, size - len(subjects))):
        subject = generator.subject(index, taken)
        subjects[subject.person.identity_number] = subject
    return Population(seed, subjects, scenarios)
