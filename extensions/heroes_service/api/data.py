"""Data API (seed paths ``/organization/data/...``): buckets, folders, objects, streamed transfers.

Every route needs an authenticated user (rows in api/access.py); which bucket a caller may read or write
is decided by the data domain (``heroes_service.data.service``): foreign buckets answer 404, read-only
members get 403 on writes, quota overruns 413, an unreachable S3 server 503.

Uploads are the raw request body (``Content-Type`` kept), streamed to S3 in multipart parts; downloads
stream back with ``Range`` support. ``presigned=true`` returns a time-limited URL (GET) or POST form
for transfers straight to the S3 server instead.
"""
from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from .. import data as data_pkg
from ..auth import Principal, current_principal, require_role
from ..errors import ApiError, Conflict, Invalid
from ..identity import lifecycle
from ..settings import get_settings

#: the access table says "user" for every data route; the dependency enforces it here as well
router = APIRouter(prefix="/organization/data", tags=["data"], dependencies=[Depends(require_role("user"))])

BucketQ = Query(..., description="Physical bucket name, as GET /organization/data/list returns it.")
KeyQ = Query(..., description="Object key relative to the bucket ('a/b.csv'); a folder ends with '/'.")


_LAST: list[data_pkg.DataService] = []  # the most recently built domain, for the organization hooks


def data_service(request: Request) -> data_pkg.DataService:
    """The app's data domain, built on first use from the app's settings."""
    service = getattr(request.app.state, "data", None)
    if service is None:
        settings = getattr(request.app.state, "settings", None) or get_settings()
        service = data_pkg.build(settings)
        request.app.state.data = service
        _LAST[:] = [service]
    return service


def _hook_service() -> data_pkg.DataService:
    if not _LAST:
        _LAST.append(data_pkg.build(get_settings()))
    return _LAST[0]


def _organization_created(_session, org) -> None:
    """Creating an organization creates its shared bucket (503 from S3 undoes the whole creation)."""
    _hook_service().provision_organization(org.name)


def _undo_organization_created(_session, org) -> None:
    _hook_service().undo_provision_organization(org.name)


def _organization_deleted(_session, org) -> None:
    """Deleting an organization deletes its shared buckets and everything in them."""
    _hook_service().delete_organization_storage(org.name)


lifecycle.register_created(_organization_created, undo=_undo_organization_created)
lifecycle.register_deleted(_organization_deleted)


class NewBucket(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    name: str = Field(..., description="The bucket's own name: lower-case letters, digits and inner hyphens.")
    scope: Literal["user", "organization"] = Field(
        "user", description="'user': an extra personal bucket; 'organization': shared (org admins only).")


class NewFolder(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    folder: str = Field(..., description="Folder key relative to the bucket, e.g. 'inputs/2024/'.")


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown fields are refused, never ignored
    source_bucket: str
    source_key: str = Field(..., description="Object key, or a folder ending with '/' (copied recursively).")
    bucket: str = Field(..., description="Destination bucket (you must be allowed to write it).")
    key: str = Field(..., description="Destination key (a folder ending with '/' for a folder source).")


@router.get("/list", summary="Buckets you may use (your personal space, your organization's shared space)")
def list_buckets(principal: Principal = Depends(current_principal),
                 data: data_pkg.DataService = Depends(data_service)) -> dict:
    return {"buckets": data.list_buckets(principal)}


@router.get("/size", summary="Bytes and objects of a bucket or prefix, or of all your buckets with the quota")
def size(bucket: str | None = Query(None), prefix: str = Query(""),
         principal: Principal = Depends(current_principal),
         data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.size(principal, bucket, prefix)


@router.post("/bucket", status_code=201, summary="Create an extra bucket (personal, or shared by an org admin)")
def create_bucket(body: NewBucket, principal: Principal = Depends(current_principal),
                  data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.create_bucket(principal, body.name, body.scope)


@router.delete("/bucket", summary="Delete an extra bucket (force=true deletes its objects too)")
def delete_bucket(bucket: str = BucketQ, force: bool = Query(False),
                  principal: Principal = Depends(current_principal),
                  data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.delete_bucket(principal, bucket, force=force)


@router.post("/bucket/{bucket}/", status_code=201, summary="Create a folder")
def create_folder(bucket: str, body: NewFolder, principal: Principal = Depends(current_principal),
                  data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.create_folder(principal, bucket, body.folder)


@router.get("/bucket/{bucket}/list", summary="Folders and objects below a prefix (one page)")
def list_objects(bucket: str, prefix: str = Query(""), recursive: bool = Query(False),
                 limit: int = Query(1000, ge=1, le=1000), token: str | None = Query(None),
                 principal: Principal = Depends(current_principal),
                 data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.list_objects(principal, bucket, prefix, recursive=recursive, limit=limit, token=token)


@router.delete("/bucket/{bucket}", summary="Delete an object, or a folder and its contents (key ends with '/')")
def delete_path(bucket: str, key: str = KeyQ, principal: Principal = Depends(current_principal),
                data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.delete_path(principal, bucket, key)


@router.get("/download", summary="Stream an object (Range supported), or get a presigned URL",
            response_class=StreamingResponse)
def download(request: Request, bucket: str = BucketQ, key: str = KeyQ,
             presigned: bool = Query(False, description="Answer a time-limited URL instead of the bytes."),
             principal: Principal = Depends(current_principal),
             data: data_pkg.DataService = Depends(data_service)):
    if presigned:
        from fastapi.responses import JSONResponse

        return JSONResponse(data.presign_download(principal, bucket, key))
    opened = data.download(principal, bucket, key, request.headers.get("range"))
    name = key.rsplit("/", 1)[-1]
    headers = dict(opened.headers)
    headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return StreamingResponse(opened.body, status_code=opened.status, headers=headers,
                             media_type="application/octet-stream")


@router.post("/upload", status_code=201,
             summary="Upload the request body as an object (streamed, multipart), or get a presigned POST form",
             openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}, "required": False}})
async def upload(request: Request, bucket: str = BucketQ, key: str = KeyQ,
                 overwrite: bool = Query(True, description="false: refuse (409) when the key exists."),
                 presigned: bool = Query(False, description="Answer a POST form for S3 instead of reading a body."),
                 principal: Principal = Depends(current_principal),
                 data: data_pkg.DataService = Depends(data_service)) -> dict:
    from starlette.concurrency import run_in_threadpool

    if presigned:
        return await run_in_threadpool(data.presign_upload, principal, bucket, key)
    length = request.headers.get("content-length")
    try:
        length_value = int(length) if length is not None else None
    except ValueError:
        raise Invalid("Content-Length is not a number", rule="content-length") from None
    if not overwrite:
        grant = await run_in_threadpool(data.resolve, principal, bucket)
        if await run_in_threadpool(data.storage.object_size, grant.bucket, key) is not None:
            raise Conflict(f"object {key!r} already exists in {grant.bucket!r}", rule="no-overwrite")
    content_type = request.headers.get("content-type") or "application/octet-stream"
    try:
        return await data.upload(principal, bucket, key, request.stream(), length=length_value,
                                 content_type=content_type)
    except ClientDisconnect:
        raise ApiError("the upload was interrupted by the client; nothing was stored", status=400) from None


@router.post("/copy", status_code=201, summary="Copy an object or folder between buckets you may use")
def copy(body: Transfer = Body(...), principal: Principal = Depends(current_principal),
         data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.transfer(principal, body.source_bucket, body.source_key, body.bucket, body.key)


@router.post("/move", summary="Move an object or folder between buckets you may write")
def move(body: Transfer = Body(...), principal: Principal = Depends(current_principal),
         data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.transfer(principal, body.source_bucket, body.source_key, body.bucket, body.key, move=True)


@router.get("/credentials", summary="S3 keys limited to your personal bucket (for notebooks stored in S3)")
def credentials(rotate: bool = Query(False, description="Issue a new secret; the old one stops working at once."),
                principal: Principal = Depends(current_principal),
                data: data_pkg.DataService = Depends(data_service)) -> dict:
    return data.user_credentials(principal, rotate=rotate)
