"""The console's labels in English and Chinese, and which of them a request gets.

Templates call ``_("key")``; a page module adds its own labels where it is defined::

    from credgate.gateway.console.labels import add_labels
    add_labels(en={"subject.title": "Who looked at my record"},
               zh={"subject.title": "谁查询了我的记录"})

A key missing in Chinese falls back to English, one missing in both shows the key itself
(``tests/test_console.py`` checks that every key has both). The language is ``?lang=zh`` or
``?lang=en`` (kept in a cookie), else the browser's Accept-Language.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "credgate_console_lang"

LABELS: dict[str, dict[str, str]] = {"en": {}, "zh": {}}


def add_labels(*, en: Mapping[str, str], zh: Mapping[str, str]) -> None:
    """Add labels; a key defined twice with different text is a mistake, raised at import."""
    for language, labels in (("en", en), ("zh", zh)):
        table = LABELS[language]
        for key, text in labels.items():
            if table.get(key, text) != text:
                raise ValueError(f"label {key!r} ({language}) defined twice")
            table[key] = text


def translate(language: str, key: str) -> str:
    return LABELS.get(language, {}).get(key) or LABELS[DEFAULT_LANGUAGE].get(key) or key


def choose_language(query: str | None, cookie: str | None, accept: str) -> str:
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    return "zh" if accept.lower().lstrip().startswith("zh") else DEFAULT_LANGUAGE


add_labels(
    en={
        "console.title": "credgate console",
        "nav.home": "Home",
        "nav.language": "中文",
        "home.reader": "Signed in with the certificate of",
        "home.role": "role",
        "home.gateway": "gateway",
        "home.other_role": (
            "This certificate's role has no console pages. The console serves regulators "
            "(regulator certificates) and subjects (subject certificates)."
        ),
        "error.title": "The gateway refused or failed",
        "error.code": "code",
        "error.reason": "reason",
        "error.request_id": "request id",
        "error.wrong_mode": "This page is for another kind of certificate.",
        "error.not_found": "No such page.",
        "pager.first": "First page",
        "pager.next": "Next page",
        "filter.apply": "Filter",
        "filter.clear": "Clear",
        "common.none": "None.",
    },
    zh={
        "console.title": "credgate 控制台",
        "nav.home": "首页",
        "nav.language": "English",
        "home.reader": "当前使用的证书",
        "home.role": "角色",
        "home.gateway": "网关",
        "home.other_role": (
            "此证书的角色没有控制台页面。控制台为监管机构（监管证书）和信息主体（主体证书）服务。"
        ),
        "error.title": "网关拒绝或出错",
        "error.code": "状态码",
        "error.reason": "原因",
        "error.request_id": "请求编号",
        "error.wrong_mode": "此页面属于另一类证书。",
        "error.not_found": "没有此页面。",
        "pager.first": "第一页",
        "pager.next": "下一页",
        "filter.apply": "筛选",
        "filter.clear": "清除",
        "common.none": "无。",
    },
)
