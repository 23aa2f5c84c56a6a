"""Dependencies the routes declare: the shared context and the caller's role."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve.app import AppContext, context
from serve.auth import Principal, require


def get_ctx(request: Request) -> AppContext:
    return context(request.app)


Ctx = Annotated[AppContext, Depends(get_ctx)]
Reader = Annotated[Principal, Depends(require("reader"))]
Editor = Annotated[Principal, Depends(require("editor"))]
Admin = Annotated[Principal, Depends(require("admin"))]
