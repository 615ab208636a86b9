"""Regulator: the latest checkpoint (verified with the pinned log key) and the witnesses that
cosign it, with a visible alert for any witness that refused, is ahead of the log, cannot be
reached or has fallen behind (``console.witnesses``)."""

from __future__ import annotations

from aiohttp import web

from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.labels import add_labels
from credgate.gateway.console.pages import page
from credgate.gateway.console.proofs import check_checkpoint
from credgate.gateway.console.rendering import connection, render
from credgate.gateway.console.witnesses import witness_views


@page("/regulator/checkpoints", mode=Mode.REGULATOR, nav="nav.checkpoints", order=20)
async def checkpoints(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    latest = await gateway.regulator.GetLatestCheckpoint(
        regulator_pb.GetLatestCheckpointRequest(), timeout=gateway.timeout
    )
    check = check_checkpoint(latest.checkpoint.note, gateway.log_verifiers)
    views = witness_views(
        latest.witnesses,
        latest.checkpoint.tree_size,
        log_verifiers=gateway.log_verifiers,
        witness_verifiers=gateway.witness_verifiers,
        behind_after=gateway.witness_behind_after,
    )
    return render(
        request,
        "regulator/checkpoints.html",
        checkpoint=latest.checkpoint,
        check=check,
        witnesses=views,
        alerts=[(view.status.witness, alert) for view in views for alert in view.alerts],
    )


add_labels(
    en={
        "nav.checkpoints": "Checkpoints",
        "checkpoints.title": "Checkpoints and witnesses",
        "checkpoints.latest": "Latest checkpoint",
        "checkpoints.size": "Tree size",
        "checkpoints.time": "Time (UTC)",
        "checkpoints.root": "Root hash",
        "checkpoints.origin": "Origin",
        "checkpoints.verified": "signature verified with the pinned log key",
        "checkpoints.not_verified": "signature NOT verified",
        "checkpoints.witnesses": "Witnesses",
        "checkpoints.no_witnesses": "The gateway submits its checkpoints to no witness.",
        "checkpoints.witness": "Witness",
        "checkpoints.outcome": "Last answer",
        "checkpoints.cosigned_size": "Cosigned size",
        "checkpoints.submitted_size": "Submitted size",
        "checkpoints.attempted_at": "Last submitted",
        "checkpoints.cosigned_at": "Last cosigned",
        "checkpoints.cosignature": "Cosignature",
        "checkpoints.alerts": "Witness alerts",
        "checkpoints.cosigned_checkpoint": "Newest cosigned checkpoint",
    },
    zh={
        "nav.checkpoints": "检查点",
        "checkpoints.title": "检查点与见证人",
        "checkpoints.latest": "最新检查点",
        "checkpoints.size": "树大小",
        "checkpoints.time": "时间（UTC）",
        "checkpoints.root": "根哈希",
        "checkpoints.origin": "来源",
        "checkpoints.verified": "签名已用固定的日志密钥验证",
        "checkpoints.not_verified": "签名未通过验证",
        "checkpoints.witnesses": "见证人",
        "checkpoints.no_witnesses": "网关未将检查点提交给任何见证人。",
        "checkpoints.witness": "见证人",
        "checkpoints.outcome": "最近答复",
        "checkpoints.cosigned_size": "已联署大小",
        "checkpoints.submitted_size": "已提交大小",
        "checkpoints.attempted_at": "最近提交",
        "checkpoints.cosigned_at": "最近联署",
        "checkpoints.cosignature": "联署签名",
        "checkpoints.alerts": "见证人警报",
        "checkpoints.cosigned_checkpoint": "最新联署的检查点",
    },
)
