"""Comparisons (admin): run base / RAG / tuned / RAG+tuned as a job; serve its reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from eval.cases import CaseError, CaseSet
from eval.html import CSP
from eval.report import HTML_NAME, JSON_NAME
from eval.runner import DEFAULT_MAX_TOKENS, ComparisonCancelled, ComparisonError, check_arms
from eval.runner import parse_arms as parse_arm_names
from eval.session import (
    SHIPPED_CASES,
    CompareRequest,
    cases_from_objects,
    load_cases_strict,
    reports_dir,
    run_and_write,
    tone_setup,
)
from eval.tone_baseline import DEFAULT_QUESTIONS
from serve.api.deps import AS_ADMIN, WITH_BODY, Admin, Ctx
from serve.api.schema import CleanStr, check_tree
from serve.context import AppContext
from serve.errors import ApiError, documented
from serve.jobs import Job, JobCancelled, JobContext, JobNotFoundError
from serve.pipeline import Mode

router = APIRouter(prefix="/v1", tags=["compare"])
KIND = "compare"
MAX_CASES = 2000
Arm = Literal["base", "rag", "tuned", "rag+tuned"]


class CompareBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [
            {"use_shipped": True, "modes": ["base", "rag"], "limit": 2, "tone_questions": 0},
        ]},
    )  # fmt: skip
    cases: list[dict[str, Any]] | None = Field(
        None,
        max_length=MAX_CASES,
        description="Inline cases: {id, question, reference, "
        "document_ids, tags?, key_facts?, paraphrase_of?}, validated as a cases file.",
    )
    use_shipped: bool = Field(False, description="Use the shipped data/eval/cases.jsonl.")
    adapter: CleanStr | None = Field(
        None, max_length=200, description="NAME[@version] of the tuned arms."
    )
    modes: list[Arm] | None = Field(
        None, min_length=1, description="Default: all four with an adapter, else base and rag."
    )
    limit: int | None = Field(None, ge=1, le=MAX_CASES, description="Only the first N cases.")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, description="Tokens per answer, every arm.")
    top_k: int | None = Field(None, ge=1)
    tone_questions: int = Field(DEFAULT_QUESTIONS, ge=0, le=1000)

    @field_validator("cases")
    @classmethod
    def _clean_cases(cls, cases: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for number, case in enumerate(cases or ()):
            check_tree(case, f"cases[{number}]")
        return cases

    @model_validator(mode="after")
    def _one_source(self) -> CompareBody:
        if (self.cases is not None) == self.use_shipped:
            raise ValueError("send either cases (a list) or use_shipped: true")
        return self


def _cases(body: CompareBody) -> CaseSet:
    try:
        if body.cases is not None:
            return cases_from_objects(body.cases)
        return load_cases_strict(SHIPPED_CASES)
    except CaseError as exc:
        inline = body.cases is not None
        problems = [
            f"cases[{p.line - 1}]: {p.reason}" if inline else str(p) for p in exc.problems[:20]
        ]
        detail = "; ".join(problems) if problems else str(exc).split(": ", 1)[-1]
        where = "" if inline else f"{SHIPPED_CASES.name}: "
        raise ApiError(400, "invalid_cases", f"{where}{detail}", param="cases") from None


def _check(ctx: AppContext, body: CompareBody) -> tuple[Mode, ...]:
    try:
        names = body.modes or (
            ["base", "rag", "tuned", "rag+tuned"] if body.adapter else ["base", "rag"]
        )
        arms = parse_arm_names(names)
        check_arms(arms, body.adapter)
    except ComparisonError as exc:
        raise ApiError(400, "invalid_request", str(exc), param="modes") from None
    if body.max_tokens > ctx.settings.chat.max_tokens_limit:
        raise ApiError(
            400,
            "invalid_request",
            f"max_tokens is over the server's limit of {ctx.settings.chat.max_tokens_limit}",
            param="max_tokens",
        )
    if body.top_k is not None and body.top_k > ctx.settings.chat.max_top_k:
        raise ApiError(
            400, "invalid_request", f"top_k is over {ctx.settings.chat.max_top_k}", param="top_k"
        )
    return arms


def _links(job_id: str) -> dict[str, str]:
    return {kind: f"/v1/compare/{job_id}/report.{kind}" for kind in ("json", "html")}


@router.post(
    "/compare",
    status_code=202,
    summary="Compare the arms on cases (a job)",
    responses=documented(*AS_ADMIN, *WITH_BODY, 404, 409, 422, 503, 507),
)
async def compare(ctx: Ctx, who: Admin, body: CompareBody) -> dict[str, Any]:
    arms = _check(ctx, body)
    cases = await run_in_threadpool(_cases, body)
    if body.adapter and any(a.tuned for a in arms):  # unknown adapter: 404 now, not a failed job
        await run_in_threadpool(ctx.pipeline.resolve, body.adapter)
    source = "inline" if body.cases is not None else "shipped"
    request = CompareRequest(
        cases, arms, body.adapter, body.max_tokens, body.limit, body.top_k, source=source
    )
    try:
        tone = await run_in_threadpool(tone_setup, ctx.settings, body.tone_questions)
    except ComparisonError as exc:
        raise ApiError(400, "invalid_request", str(exc), param="tone_questions") from None
    total = min(len(cases.cases), body.limit or len(cases.cases))

    def run(context: JobContext) -> dict[str, Any]:
        def progress(stage: str, done: int, stage_total: int) -> None:
            context.report(stage=stage, done=done, total=stage_total)  # raises on cancel

        context.report(stage="questions", done=0, total=total)
        out = reports_dir(ctx.settings) / context.job.id
        try:
            report, _ = run_and_write(
                ctx.pipeline, request, tone, out, progress, context.cancelled.is_set
            )
        except ComparisonCancelled:
            raise JobCancelled from None
        return {
            "report_id": context.job.id,
            "links": _links(context.job.id),
            **report.summary_dict(),
        }

    params = body.model_dump(exclude={"cases"}) | {"cases": len(cases.cases), "source": source}
    job = ctx.jobs.submit(KIND, run, params=params, owner=who.key_id)
    return {"object": "job", **job.to_dict(), "links": _links(job.id)}


def _report_file(ctx: AppContext, job_id: str, name: str) -> Path:
    try:
        job: Job | None = ctx.jobs.get(job_id)  # ids are hex: never a path
    except JobNotFoundError:
        job = None
    if job is None or job.kind != KIND:
        raise ApiError(404, "job_not_found", "no comparison job with that id")
    if job.state != "succeeded":
        raise ApiError(409, "report_not_ready", f"the comparison is {job.state}: no report")
    path = reports_dir(ctx.settings) / job.id / name
    if not path.is_file():
        raise ApiError(404, "report_not_found", "the report files are gone from the server")
    return path


def _report(media_type: str) -> dict[int | str, dict[str, Any]]:
    ok = {"description": "The report file", "content": {media_type: {"schema": {}}}}
    return {200: ok, **documented(*AS_ADMIN, 404, 409)}


@router.get(
    "/compare/{job_id}/report.html",
    summary="A comparison's HTML report",
    response_class=FileResponse,
    responses=_report("text/html"),
)
async def report_html(ctx: Ctx, who: Admin, job_id: str) -> FileResponse:
    path = _report_file(ctx, job_id, HTML_NAME)
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=headers)


@router.get(
    "/compare/{job_id}/report.json",
    summary="A comparison's JSON report",
    response_class=FileResponse,
    responses=_report("application/json"),
)
async def report_json(ctx: Ctx, who: Admin, job_id: str) -> FileResponse:
    path = _report_file(ctx, job_id, JSON_NAME)
    return FileResponse(path, media_type="application/json")
