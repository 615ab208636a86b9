"""Chinese (zh-CN) and English labels for the console's subject mode (issue #17).

Every word the subject pages show — headings, column names, buttons, and each value of the
enums they display (purposes, outcomes, grant states, stages, deadlines, …) — is here in both
languages, added to the console's catalogue (``console.labels.add_labels``) when a subject
page imports this module. ``tests/test_subject_view.py`` fails when an enum value the pages
show has no label in either language. The console chooses the language (``?lang=zh|en``, then
its cookie, then ``Accept-Language``).

Enum values are keyed ``enum.<proto name>`` (``enum.PURPOSE_CREDIT_APPLICATION_REVIEW``), so a
value added to the schema shows its key until it is labelled — never a blank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from credgate.gateway.console.labels import add_labels, translate

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

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
    "nav.subject_accesses": ("查询记录", "Accesses"),
    "nav.subject_grants": ("我的授权", "My grants"),
    "nav.subject_cases": ("异议与申请", "Objections and applications"),
    "nav.subject_certificate": ("修复状态证明", "Certificate"),
    "subject.no_key": (
        "控制台启动时未提供 --subject-key，无法签名授权变更。",
        "The console was started without --subject-key: it cannot sign a change.",
    ),
    "subject.provisional": ("暂定", "provisional"),
    "subject.keep_text": (
        "证明为一行文本，请保存文件；二维码内容与文件等效。",
        "The certificate is one line of text: keep the file. The QR code holds the same "
        "signed bytes.",
    ),
    "subject.done.withdraw": ("授权已撤回", "The grant is withdrawn"),
    "subject.done.pause": ("授权已暂停", "The grant is paused"),
    "subject.done.resume": ("授权已恢复", "The grant is resumed"),
    "subject.refused": ("网关拒绝了请求", "The gateway refused"),
    "subject.col.when": ("时间", "When"),
    "subject.col.institution": ("机构", "Institution"),
    "subject.col.role": ("机构类型", "Role"),
    "subject.col.purpose": ("用途", "Purpose"),
    "subject.col.action": ("操作", "Action"),
    "subject.col.outcome": ("结果", "Outcome"),
    "subject.col.reason": ("原因", "Reason"),
    "subject.col.categories": ("信息类别", "Data categories"),
    "subject.col.grant": ("授权编号", "Grant"),
    "subject.col.grantee": ("被授权机构", "Grantee"),
    "subject.col.state": ("状态", "State"),
    "subject.col.valid_from": ("生效时间", "Valid from"),
    "subject.col.valid_until": ("截止时间", "Valid until"),
    "subject.col.uses": ("已使用次数", "Times used"),
    "subject.col.objection": ("异议编号", "Objection"),
    "subject.col.application": ("申请编号", "Application"),
    "subject.col.kind": ("类型", "Kind"),
    "subject.col.stage": ("阶段", "Stage"),
    "subject.col.filed": ("提交时间", "Filed"),
    "subject.col.next_step": ("下一步", "Next step"),
    "subject.col.responsible": ("责任方", "Who must act"),
    "subject.col.deadlines": ("期限", "Deadlines"),
    "subject.col.due": ("截止日期", "Due on"),
    "subject.col.overdue": ("已逾期", "Overdue"),
    "subject.col.met": ("已完成", "Met"),
    "subject.col.open": ("进行中", "Open"),
    "subject.col.closed": ("已结束", "Closed"),
    "subject.col.keep_until": ("可保存至", "May keep until"),
    "subject.button.withdraw": ("撤回", "Withdraw"),
    "subject.button.pause": ("暂停", "Pause"),
    "subject.button.resume": ("恢复", "Resume"),
    "subject.confirm.withdraw": (
        "撤回后不可恢复，该机构将无法再依据此授权查询。",
        "A withdrawal is final: the institution can no longer query under this grant.",
    ),
    # Enum values (proto names).
    "enum.PURPOSE_CREDIT_APPLICATION_REVIEW": ("信贷审批", "Credit application review"),
    "enum.PURPOSE_EXISTING_CREDIT_RELATIONSHIP": ("贷后管理", "Existing credit relationship"),
    "enum.PURPOSE_SUBJECT_AUTHORIZED": ("本人授权", "Authorized by you"),
    "enum.PURPOSE_JUDICIAL_INVESTIGATION": ("司法调查", "Judicial investigation"),
    "enum.PURPOSE_TAX_INVESTIGATION": ("税务调查", "Tax investigation"),
    "enum.PURPOSE_STATUTORY_DUTY": ("法定职责", "Statutory duty"),
    "enum.PURPOSE_SELF_INQUIRY": ("本人查询", "Your own inquiry"),
    "enum.PURPOSE_REGULATORY_AUDIT": ("监管审计", "Regulatory audit"),
    "enum.PURPOSE_PUBLIC_DISCLOSURE": ("依法公示", "Public disclosure"),
    "enum.AUDIT_OUTCOME_ALLOWED": ("已提供", "Answered"),
    "enum.AUDIT_OUTCOME_DENIED": ("已拒绝", "Refused"),
    "enum.INSTITUTION_ROLE_FINANCIAL_INSTITUTION": ("金融机构", "Financial institution"),
    "enum.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION": ("商业机构", "Commercial institution"),
    "enum.INSTITUTION_ROLE_AUTHORIZED_PARTY": ("受托人", "Authorized party"),
    "enum.INSTITUTION_ROLE_JUDICIAL_ORGAN": ("司法机关", "Judicial organ"),
    "enum.INSTITUTION_ROLE_TAX_AUTHORITY": ("税务机关", "Tax authority"),
    "enum.INSTITUTION_ROLE_STATUTORY_ORGAN": ("法定机关", "Statutory organ"),
    "enum.INSTITUTION_ROLE_REGULATOR": ("监管机构", "Regulator"),
    "enum.INSTITUTION_ROLE_DATA_PROVIDER": ("信息提供方", "Data provider"),
    "enum.INSTITUTION_ROLE_SUBJECT": ("本人", "You"),
    "enum.DATA_CATEGORY_IDENTITY": ("身份信息", "Identity"),
    "enum.DATA_CATEGORY_COMMERCIAL_CREDIT": ("商业信用", "Commercial credit"),
    "enum.DATA_CATEGORY_PUBLIC_RECORDS": ("公共记录", "Public records"),
    "enum.DATA_CATEGORY_SPECIAL_RECORDS": ("特别记录", "Special records"),
    "enum.DATA_CATEGORY_BANKRUPTCY_REPAIR": ("破产与信用修复", "Bankruptcy and repair"),
    "enum.AUDIT_ACTION_READ_REPAIR_STATUS": ("查询修复状态", "Read the repair status"),
    "enum.AUDIT_ACTION_READ_AUDIT_LOG": ("查阅审计日志", "Read the audit log"),
    "enum.AUDIT_ACTION_ENROLL_SUBJECT_KEY": ("登记本人密钥", "Enrolled your key"),
    "enum.AUDIT_ACTION_GRANT_CONSENT": ("记录授权", "Recorded a grant"),
    "enum.AUDIT_ACTION_REVOKE_CONSENT": ("撤销授权", "Revoked a grant"),
    "enum.AUDIT_ACTION_LIST_OWN_CONSENTS": ("查看本人授权", "Listed your grants"),
    "enum.AUDIT_ACTION_LIST_OWN_ACCESSES": ("查看查询记录", "Listed your accesses"),
    "enum.AUDIT_ACTION_REFUSE_MALFORMED_REQUEST": (
        "拒绝格式错误的请求",
        "Refused a malformed request",
    ),
    "enum.AUDIT_ACTION_READ_CONTRADICTIONS": ("查看数据矛盾", "Read contradictions"),
    "enum.AUDIT_ACTION_ACKNOWLEDGE_AUDIT_ROLLBACK": (
        "确认审计回滚",
        "Acknowledged an audit rollback",
    ),
    "enum.AUDIT_ACTION_CHANGE_CONSENT_STATE": ("变更授权状态", "Changed a grant's state"),
    "enum.AUDIT_ACTION_WATCH_CONSENT_EVENTS": ("关注授权事件", "Watched grant events"),
    "enum.AUDIT_ACTION_GET_GRANT_RECEIPT": ("获取授权回执", "Fetched a grant receipt"),
    "enum.AUDIT_ACTION_ISSUE_REPAIR_CERTIFICATE": ("签发修复状态证明", "Issued a certificate"),
    "enum.AUDIT_ACTION_READ_RESTORATION_TIMES": ("查看信用修复用时", "Read restoration times"),
    "enum.AUDIT_ACTION_FILE_OBJECTION": ("提出异议", "Filed an objection"),
    "enum.AUDIT_ACTION_READ_OBJECTIONS": ("查看异议", "Read objections"),
    "enum.AUDIT_ACTION_ANSWER_OBJECTION": ("答复异议", "Answered an objection"),
    "enum.AUDIT_ACTION_EVALUATE_REPAIR_ELIGIBILITY": (
        "评估修复资格",
        "Evaluated repair eligibility",
    ),
    "enum.AUDIT_ACTION_FILE_REPAIR_APPLICATION": ("提交修复申请", "Filed a repair application"),
    "enum.AUDIT_ACTION_READ_REPAIR_APPLICATIONS": ("查看修复申请", "Read repair applications"),
    "enum.AUDIT_ACTION_REVIEW_REPAIR_APPLICATION": (
        "审查修复申请",
        "Reviewed a repair application",
    ),
    "enum.AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION": (
        "对公示提出异议",
        "Objected to an announcement",
    ),
    "enum.AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION": (
        "裁定修复申请",
        "Ruled on a repair application",
    ),
    "enum.CONSENT_STATE_ACTIVE": ("有效", "Active"),
    "enum.CONSENT_STATE_REVOKED": ("已撤回", "Withdrawn"),
    "enum.CONSENT_STATE_EXPIRED": ("已到期", "Expired"),
    "enum.CONSENT_STATE_PAUSED": ("已暂停", "Paused"),
    "enum.CONSENT_STATE_EXHAUSTED": ("次数已用完", "Used up"),
    "enum.OBJECTION_STATE_AWAITING_SUBJECT_FILING": (
        "待本人向信息提供方提交",
        "You file it with the source",
    ),
    "enum.OBJECTION_STATE_AWAITING_SOURCE_REPLY": (
        "等待信息提供方答复",
        "Awaiting the source's reply",
    ),
    "enum.OBJECTION_STATE_CORRECTED_IN_INDEX": ("已在网关更正", "Corrected in the gateway"),
    "enum.OBJECTION_STATE_CORRECTED_BY_SOURCE": ("信息提供方已更正", "Corrected by the source"),
    "enum.OBJECTION_STATE_UPHELD_BY_SOURCE": ("信息提供方维持原记录", "Upheld by the source"),
    "enum.OBJECTION_STATE_LAPSED": ("已失效", "Lapsed"),
    "enum.OBJECTION_STATE_SUBMITTING_TO_SOURCE": (
        "正在提交信息提供方",
        "Being submitted to the source",
    ),
    "enum.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE": ("停止公开披露", "Stop public disclosure"),
    "enum.REPAIR_APPLICATION_KIND_MARK_EXEMPTED": ("标注免责", "Mark as exempted"),
    "enum.REPAIR_APPLICATION_STAGE_APPLICATION": ("申请", "Application"),
    "enum.REPAIR_APPLICATION_STAGE_REVIEW": ("审查", "Review"),
    "enum.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT": ("公示", "Public announcement"),
    "enum.REPAIR_APPLICATION_STAGE_RULING": ("裁定", "Ruling"),
    "enum.REPAIR_APPLICATION_OUTCOME_GRANTED": ("准予", "Granted"),
    "enum.REPAIR_APPLICATION_OUTCOME_DENIED": ("驳回", "Denied"),
    "enum.REPAIR_APPLICATION_OUTCOME_REJECTED": ("不予受理", "Rejected"),
    "enum.RESPONSIBLE_PARTY_GATEWAY": ("网关", "The gateway"),
    "enum.RESPONSIBLE_PARTY_SUBJECT": ("本人", "You"),
    "enum.RESPONSIBLE_PARTY_SOURCE": ("信息提供方", "The source"),
    "enum.RESPONSIBLE_PARTY_REVIEWER": ("审查机关", "The reviewer"),
    "enum.RESPONSIBLE_PARTY_PUBLIC": ("公众", "The public"),
    "enum.RESPONSIBLE_PARTY_NONE": ("无", "No one"),
    "enum.DEADLINE_KIND_SUBJECT_FILING": ("本人提交期限", "Your filing"),
    "enum.DEADLINE_KIND_SOURCE_REPLY": ("信息提供方答复期限", "The source's reply"),
    "enum.DEADLINE_KIND_ANNOUNCEMENT_PERIOD": ("公示期", "Announcement period"),
    "state.NO_RECORD": ("无破产记录", "No bankruptcy record"),
    "state.PROCEDURE_PENDING": ("程序进行中", "Procedure pending"),
    "state.OBSERVATION": ("考察期", "Observation period"),
    "state.DISCLOSURE_SUSPENDED": ("暂停公开披露", "Disclosure suspended"),
    "state.RESTORED": ("信用已修复", "Restored"),
    "state.REVOKED": ("免责已撤销", "Exemption revoked"),
    "date.restored_on": ("修复日期", "Restored on"),
    "date.observation_start": ("考察期开始", "Observation starts"),
    "date.observation_end": ("考察期结束", "Observation ends"),
}

add_labels(
    zh={key: pair[0] for key, pair in _TEXT.items()},
    en={key: pair[1] for key, pair in _TEXT.items()},
)

SUBJECT_LABEL_KEYS = frozenset(_TEXT)
"""Every key this module adds (the test checks the enum values shown are among them)."""


def enum_key(enum: _EnumTypeWrapper[Any], value: int) -> str:
    """The label key of an enum value: ``enum.<proto name>`` (its number when unknown)."""
    try:
        return "enum." + enum.Name(value)
    except ValueError:
        return str(value)


def enum_text(language: str, enum: _EnumTypeWrapper[Any], value: int) -> str:
    """The label of an enum value in ``language``."""
    return translate(language, enum_key(enum, value))
