"""The housing fund adapter passes credgate's adapter conformance kit against its mock."""

from __future__ import annotations

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.population import Subject
from credgate.adapters.testing import (
    AdapterConformance,
    Expectation,
    KindProfile,
    MockedSource,
    record_counts,
)
from credgate.api.credit_repair.v1 import vocabulary_pb2 as V

from credgate_housing_fund.adapter import HousingFundAdapter
from credgate_housing_fund.mock import HousingFundMock, mortgages


def expect_housing_fund(subject: Subject | None, config: SourceConfig) -> Expectation:
    """The fund knows a subject through their mortgages; it asserts no repair state."""
    loans = mortgages(subject.accounts) if subject is not None else []
    return Expectation(
        knows_subject=bool(loans),
        records=record_counts(
            credit_account=len(loans), default=sum(a.default_on is not None for a in loans)
        ),
    )


class TestHousingFund(AdapterConformance):
    source = MockedSource(
        "housing-fund-shenzhen", "housing_fund", HousingFundMock,
        display_name="深圳市住房公积金管理中心",
    )
    adapter_class = HousingFundAdapter
    profile = KindProfile(V.SOURCE_KIND_OTHER, expect_housing_fund)
