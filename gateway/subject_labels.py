"""Chinese (zh-CN) and English labels for the console's subject mode (issue #17).

A subject reads their own page in their own language: every word the subject pages show —
headings, column names, buttons, and each value of the enums they display (purposes,
outcomes, grant states, stages, deadlines, …) — is in ``LABELS`` in both languages, and
``tests/test_subject_labels.py`` fails when an enum value the pages show has no label in
either. The language is chosen by ``?lang=zh|en``, else the ``lang`` cookie the page set, else
the browser's ``Accept-Language`` (``choose_language``), and English when none says.

Enum values are keyed by their proto name (``PURPOSE_CREDIT_APPLICATION_REVIEW``), so a value
added to the schema shows its name until it is labelled — never a blank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"

_TEXT: dict[str, tuple[str, str]] = {
    # key: (zh-CN, en)
    "subject.title": ("我的信用修复记录", "My credit repair record"),
    "subject.accesses": ("谁查询了我的记录", "Who accessed my record"),
    "subject.accesses.intro": (
        "每一次查询都记录在审计日志中：时间、机构、用途与结果。",
        "Every access is in the audit log: when, which institution, why, and the outcome.",
    ),
    "subject.grants": ("我的授权", "My consent grants"),
    "subject.grants.intro": (
        "撤回、暂停或恢复授权的声明由本机用您的密钥签名，密钥不会离开本机。",
        "Withdraw, pause and resume are signed here with your key; the key never leaves "
        "this computer.",
    ),
    "subject.objections": ("我的异议", "My objections"),
    "subject.applications": ("我的信用修复申请", "My repair applications"),
    "subject.certificate": ("信用修复状态证明", "Repair-status certificate"),
    "subject.certificate.intro": (
        "证明仅包含修复状态及其日期，由网关签名，任何人可离线验证。",
        "The certificate holds only the repair state and its dates, signed by the gateway; "
        "anyone can verify it offline.",
    ),
    "subject.certificate.number": ("本人身份证号码", "Your own identity number"),
    "subject.certificate.days": ("有效天数（1–90）", "Valid for days (1–90)"),
    "subject.certificate.issue": ("申请证明", "Issue certificate"),
    "subject.certificate.download": ("下载证明文件", "Download certificate file"),
    "subject.certificate.qr": ("证明二维码", "Certificate QR code"),
    "subject.certificate.valid_until": ("有效期至", "Valid until"),
    "subject.certificate.verified": (
        "已按网关公布的密钥和状态列表验证",
        "Verified against the gateway's published keys and status list",
    ),
    "subject.none": ("暂无记录", "Nothing yet"),
    "subject.language": ("语言", "Language"),
    "subject.done.withdraw": ("授权已撤回", "The grant is withdrawn"),
    "subject.done.pause": ("授权已暂停", "The grant is paused"),
    "subject.done.resume": ("授权已恢复", "The grant is resumed"),
    "subject.refused": ("网关拒绝了请求", "The gateway refused"),
    "col.when": ("时间", "When"),
    "col.institution": ("机构", "Institution"),
    "col.role": ("机构类型", "Role"),
    "col.purpose": ("用途", "Purpose"),
    "col.action": ("操作", "Action"),
    "col.outcome": ("结果", "Outcome"),
    "col.reason": ("原因", "Reason"),
    "col.categories": ("信息类别", "Data categories"),
    "col.grant": ("授权编号", "Grant"),
    "col.grantee": ("被授权机构", "Grantee"),
    "col.state": ("状态", "State"),
    "col.valid_from": ("生效时间", "Valid from"),
    "col.valid_until": ("截止时间", "Valid until"),
    "col.uses": ("已使用次数", "Times used"),
    "col.objection": ("异议编号", "Objection"),
    "col.application": ("申请编号", "Application"),
    "col.kind": ("类型", "Kind"),
    "col.stage": ("阶段", "Stage"),
    "col.filed": ("提交时间", "Filed"),
    "col.next_step": ("下一步", "Next step"),
    "col.responsible": ("责任方", "Who must act"),
    "col.deadlines": ("期限", "Deadlines"),
    "col.due": ("截止日期", "Due on"),
    "col.overdue": ("已逾期", "Overdue"),
    "col.met": ("已完成", "Met"),
    "col.open": ("进行中", "Open"),
    "col.closed": ("已结束", "Closed"),
    "col.keep_until": ("可保存至", "May keep until"),
    "button.withdraw": ("撤回", "Withdraw"),
    "button.pause": ("暂停", "Pause"),
    "button.resume": ("恢复", "Resume"),
    "confirm.withdraw": (
        "撤回后不可恢复，该机构将无法再依据此授权查询。",
        "A withdrawal is final: the institution can no longer query under this grant.",
    ),
    # Enum values (proto names).
    "PURPOSE_CREDIT_APPLICATION_REVIEW": ("信贷审批", "Credit application review"),
    "PURPOSE_EXISTING_CREDIT_RELATIONSHIP": ("贷后管理", "Existing credit relationship"),
    "PURPOSE_SUBJECT_AUTHORIZED": ("本人授权", "Authorized by you"),
    "PURPOSE_JUDICIAL_INVESTIGATION": ("司法调查", "Judicial investigation"),
    "PURPOSE_TAX_INVESTIGATION": ("税务调查", "Tax investigation"),
    "PURPOSE_STATUTORY_DUTY": ("法定职责", "Statutory duty"),
    "PURPOSE_SELF_INQUIRY": ("本人查询", "Your own inquiry"),
    "PURPOSE_REGULATORY_AUDIT": ("监管审计", "Regulatory audit"),
    "PURPOSE_PUBLIC_DISCLOSURE": ("依法公示", "Public disclosure"),
    "AUDIT_OUTCOME_ALLOWED": ("已提供", "Answered"),
    "AUDIT_OUTCOME_DENIED": ("已拒绝", "Refused"),
    "INSTITUTION_ROLE_FINANCIAL_INSTITUTION": ("金融机构", "Financial institution"),
    "INSTITUTION_ROLE_COMMERCIAL_INSTITUTION": ("商业机构", "Commercial institution"),
    "INSTITUTION_ROLE_AUTHORIZED_PARTY": ("受托人", "Authorized party"),
    "INSTITUTION_ROLE_JUDICIAL_ORGAN": ("司法机关", "Judicial organ"),
    "INSTITUTION_ROLE_TAX_AUTHORITY": ("税务机关", "Tax authority"),
    "INSTITUTION_ROLE_STATUTORY_ORGAN": ("法定机关", "Statutory organ"),
    "INSTITUTION_ROLE_REGULATOR": ("监管机构", "Regulator"),
    "INSTITUTION_ROLE_DATA_PROVIDER": ("信息提供方", "Data provider"),
    "INSTITUTION_ROLE_SUBJECT": ("本人", "You"),
    "DATA_CATEGORY_IDENTITY": ("身份信息", "Identity"),
    "DATA_CATEGORY_COMMERCIAL_CREDIT": ("商业信用", "Commercial credit"),
    "DATA_CATEGORY_PUBLIC_RECORDS": ("公共记录", "Public records"),
    "DATA_CATEGORY_SPECIAL_RECORDS": ("特别记录", "Special records"),
    "DATA_CATEGORY_BANKRUPTCY_REPAIR": ("破产与信用修复", "Bankruptcy and repair"),
    "AUDIT_ACTION_READ_REPAIR_STATUS": ("查询修复状态", "Read the repair status"),
    "AUDIT_ACTION_READ_AUDIT_LOG": ("查阅审计日志", "Read the audit log"),
    "AUDIT_ACTION_ENROLL_SUBJECT_KEY": ("登记本人密钥", "Enrolled your key"),
    "AUDIT_ACTION_GRANT_CONSENT": ("记录授权", "Recorded a grant"),
    "AUDIT_ACTION_REVOKE_CONSENT": ("撤销授权", "Revoked a grant"),
    "AUDIT_ACTION_LIST_OWN_CONSENTS": ("查看本人授权", "Listed your grants"),
    "AUDIT_ACTION_LIST_OWN_ACCESSES": ("查看查询记录", "Listed your accesses"),
    "AUDIT_ACTION_REFUSE_MALFORMED_REQUEST": ("拒绝格式错误的请求", "Refused a malformed request"),
    "AUDIT_ACTION_READ_CONTRADICTIONS": ("查看数据矛盾", "Read contradictions"),
    "AUDIT_ACTION_ACKNOWLEDGE_AUDIT_ROLLBACK": ("确认审计回滚", "Acknowledged an audit rollback"),
    "AUDIT_ACTION_CHANGE_CONSENT_STATE": ("变更授权状态", "Changed a grant's state"),
    "AUDIT_ACTION_WATCH_CONSENT_EVENTS": ("关注授权事件", "Watched grant events"),
    "AUDIT_ACTION_GET_GRANT_RECEIPT": ("获取授权回执", "Fetched a grant receipt"),
    "AUDIT_ACTION_ISSUE_REPAIR_CERTIFICATE": ("签发修复状态证明", "Issued a certificate"),
    "AUDIT_ACTION_FILE_OBJECTION": ("提出异议", "Filed an objection"),
    "AUDIT_ACTION_READ_OBJECTIONS": ("查看异议", "Read objections"),
    "AUDIT_ACTION_ANSWER_OBJECTION": ("答复异议", "Answered an objection"),
    "AUDIT_ACTION_EVALUATE_REPAIR_ELIGIBILITY": ("评估修复资格", "Evaluated repair eligibility"),
    "AUDIT_ACTION_FILE_REPAIR_APPLICATION": ("提交修复申请", "Filed a repair application"),
    "AUDIT_ACTION_READ_REPAIR_APPLICATIONS": ("查看修复申请", "Read repair applications"),
    "AUDIT_ACTION_REVIEW_REPAIR_APPLICATION": ("审查修复申请", "Reviewed a repair application"),
    "AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION": ("对公示提出异议", "Objected to an announcement"),
    "AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION": ("裁定修复申请", "Ruled on a repair application"),
    "CONSENT_STATE_ACTIVE": ("有效", "Active"),
    "CONSENT_STATE_REVOKED": ("已撤回", "Withdrawn"),
    "CONSENT_STATE_EXPIRED": ("已到期", "Expired"),
    "CONSENT_STATE_PAUSED": ("已暂停", "Paused"),
    "CONSENT_STATE_EXHAUSTED": ("次数已用完", "Used up"),
    "OBJECTION_STATE_AWAITING_SUBJECT_FILING": (
        "待本人向信息提供方提交",
        "You file it with the source",
    ),
    "OBJECTION_STATE_AWAITING_SOURCE_REPLY": ("等待信息提供方答复", "Awaiting the source's reply"),
    "OBJECTION_STATE_CORRECTED_IN_INDEX": ("已在网关更正", "Corrected in the gateway"),
    "OBJECTION_STATE_CORRECTED_BY_SOURCE": ("信息提供方已更正", "Corrected by the source"),
    "OBJECTION_STATE_UPHELD_BY_SOURCE": ("信息提供方维持原记录", "Upheld by the source"),
    "OBJECTION_STATE_LAPSED": ("已失效", "Lapsed"),
    "OBJECTION_STATE_SUBMITTING_TO_SOURCE": ("正在提交信息提供方", "Being submitted to the source"),
    "REPAIR_APPLICATION_KIND_STOP_DISCLOSURE": ("停止公开披露", "Stop public disclosure"),
    "REPAIR_APPLICATION_KIND_MARK_EXEMPTED": ("标注免责", "Mark as exempted"),
    "REPAIR_APPLICATION_STAGE_APPLICATION": ("申请", "Application"),
    "REPAIR_APPLICATION_STAGE_REVIEW": ("审查", "Review"),
    "REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT": ("公示", "Public announcement"),
    "REPAIR_APPLICATION_STAGE_RULING": ("裁定", "Ruling"),
    "REPAIR_APPLICATION_OUTCOME_GRANTED": ("准予", "Granted"),
    "REPAIR_APPLICATION_OUTCOME_DENIED": ("驳回", "Denied"),
    "REPAIR_APPLICATION_OUTCOME_REJECTED": ("不予受理", "Rejected"),
    "RESPONSIBLE_PARTY_GATEWAY": ("网关", "The gateway"),
    "RESPONSIBLE_PARTY_SUBJECT": ("本人", "You"),
    "RESPONSIBLE_PARTY_SOURCE": ("信息提供方", "The source"),
    "RESPONSIBLE_PARTY_REVIEWER": ("审查机关", "The reviewer"),
    "RESPONSIBLE_PARTY_PUBLIC": ("公众", "The public"),
    "RESPONSIBLE_PARTY_NONE": ("无", "No one"),
    "DEADLINE_KIND_SUBJECT_FILING": ("本人提交期限", "Your filing"),
    "DEADLINE_KIND_SOURCE_REPLY": ("信息提供方答复期限", "The source's reply"),
    "DEADLINE_KIND_ANNOUNCEMENT_PERIOD": ("公示期", "Announcement period"),
    "NO_RECORD": ("无破产记录", "No bankruptcy record"),
    "PROCEDURE_PENDING": ("程序进行中", "Procedure pending"),
    "OBSERVATION": ("考察期", "Observation period"),
    "DISCLOSURE_SUSPENDED": ("暂停公开披露", "Disclosure suspended"),
    "RESTORED": ("信用已修复", "Restored"),
    "REVOKED": ("免责已撤销", "Exemption revoked"),
    "restored_on": ("修复日期", "Restored on"),
    "observation_start": ("考察期开始", "Observation starts"),
    "observation_end": ("考察期结束", "Observation ends"),
}

LABELS: Mapping[str, Mapping[str, str]] = {
    language: {key: pair[i] for key, pair in _TEXT.items()} for i, language in enumerate(LANGUAGES)
}
"""``LABELS[language][key]``: every subject-mode label in zh and en."""


def text(language: str, key: str) -> str:
    """The label ``key`` in ``language``; the key itself when it has none (visible, not blank)."""
    return LABELS.get(language, LABELS[DEFAULT_LANGUAGE]).get(key, key)


def enum_text(language: str, enum: _EnumTypeWrapper[Any], value: int) -> str:
    """The label of an enum value, keyed by its proto name (its name when unlabelled)."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    return text(language, name)


def _supported(tag: str) -> str | None:
    primary = tag.strip().lower().split("-")[0].split("_")[0]
    return primary if primary in LANGUAGES else None


def choose_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """``?lang=`` first, then the cookie, then the browser's ``Accept-Language`` (highest q
    first, ties in the order given), then English."""
    for chosen in (query, cookie):
        if chosen and _supported(chosen):
            return str(_supported(chosen))
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = _supported(tag)
        if language is not None and quality > 0:
            ranked.append((-quality, position, language))
    return sorted(ranked)[0][2] if ranked else DEFAULT_LANGUAGE
