"""The cluster's Asterisk nodes as the SIP edge sees them: supervisors look, admins drain and
undrain (audited). On a single node (no edge) there is nothing to list: 404 says so."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from ivr.api.audit import record_change
from ivr.api.auth import Principal, require_roles
from ivr.cluster.edge import EdgeRpcError
from ivr.cluster.nodes import NodeError, NodeRow, UnknownNode, list_nodes, set_drained
from ivr.models import Role
from ivr.settings import Settings

router = APIRouter(prefix="/api/nodes", tags=["cluster"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.SUPERVISOR, Role.ADMIN))]


class NodeOut(BaseModel):
    node: str = Field(examples=["node1"])
    state: str = Field(description="up, down (the edge's probes fail) or drained")
    channels: int | None = Field(description="channels on its Asterisk now; null: no answer")
    uri: str = Field(examples=["sip:127.0.0.1:5061"])


def _out(row: NodeRow) -> NodeOut:
    return NodeOut(node=row.node_id, state=row.state, channels=row.calls, uri=row.uri)


def _cluster_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    if not settings.edge_address:
        raise HTTPException(404, "this server is a single node: no SIP edge, no nodes to list")
    return settings


@router.get("", response_model=list[NodeOut], summary="The nodes and their state (supervisor)")
async def nodes(request: Request, principal: Supervisor) -> list[NodeOut]:
    try:
        return [_out(row) for row in await list_nodes(_cluster_settings(request))]
    except EdgeRpcError as exc:
        raise HTTPException(503, str(exc)) from exc


async def _set(request: Request, principal: Principal, node: str, drained: bool) -> NodeOut:
    settings = _cluster_settings(request)
    try:
        row = await set_drained(settings, node, drained)
    except UnknownNode as exc:
        raise HTTPException(404, str(exc)) from exc
    except NodeError as exc:
        raise HTTPException(409, str(exc)) from exc
    except EdgeRpcError as exc:
        raise HTTPException(503, str(exc)) from exc
    await record_change(request, principal, "node.drain" if drained else "node.undrain", node)
    return _out(row)


@router.post("/{node}/drain", response_model=NodeOut,
             summary="No new calls to this node; it finishes those it has (admin)")
async def drain(request: Request, node: str, principal: Admin) -> NodeOut:
    return await _set(request, principal, node, True)


@router.post("/{node}/undrain", response_model=NodeOut,
             summary="The node takes new calls again (admin)")
async def undrain(request: Request, node: str, principal: Admin) -> NodeOut:
    return await _set(request, principal, node, False)
