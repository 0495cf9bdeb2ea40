"""FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.service import DecisionService


def get_service(request: Request) -> DecisionService:
    """The process-wide decision service built at start-up."""
    return request.app.state.service


ServiceDep = Annotated[DecisionService, Depends(get_service)]
