"""The web service: triage prediction, search, report generation and a web page, over the library.

``create_app`` returns a FastAPI application; ``medfusion serve`` runs it with uvicorn.
Each model is loaded once when the application starts (a run that cannot be loaded stops
the start with its error) and runs in worker threads, one request at a time per model
(:mod:`medfusion.serve.services`), so the event loop stays free and concurrent requests
are safe.

Routes (the OpenAPI description is at ``/docs`` and ``/openapi.json``):

| route | what |
|---|---|
| ``POST /predict`` | multipart ``image``, ``vitals`` (JSON {column: number}), ``note``: any of them → prediction |
| ``GET /search?q=&k=&where=`` | text → image search; hits with score, metadata and ``thumbnail_url`` |
| ``POST /search/image?k=&where=`` | multipart ``image`` → the most similar indexed images |
| ``GET /thumbnail/{id}`` | PNG thumbnail of an indexed image, looked up by id |
| ``POST /report`` | multipart ``image`` → generated report with an attention overlay per sentence and finding word |
| ``GET /healthz``, ``GET /version`` | liveness and loaded services; versions and models |
| ``GET /`` | the web page (``static/``) |

A route whose model was not given answers 503 naming the option that loads it.

**Access.** With a token (``--token`` or ``MEDFUSION_TOKEN``), every route that runs a
model or reveals data needs ``Authorization: Bearer <token>`` (401 otherwise): predict,
search, thumbnails, report and version. Public: the page and its static files (no data:
the page asks for the token and sends it with each of its requests, thumbnails
included), ``/healthz`` (says only which services run and that a token is required), and
the API description ``/docs`` and ``/openapi.json`` (the interface, no data; its
"Authorize" button takes the token for trying routes). The token is checked before a
request body is read.

**Safety.** Request bodies over ``max_upload_bytes`` are refused (413) before or while
they are read; images are identified by content (415 for other content, 422 for a
corrupt file or an image the model cannot take); no client-given path reaches the file
system; the log has one line per request (method, route template, status, latency) and
never a path parameter, query string, upload or note.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Query, Request, Security, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medfusion import __version__
from medfusion.data.io.base import DataReadError
from medfusion.serve.inputs import parse_note, parse_vitals, rejected, saved_image
from medfusion.serve.middleware import AccessLog, BearerToken, BodyLimit
from medfusion.serve.services import ReportService, SearchService, TriageService

#: Default request body limit.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Paths and path prefixes served without the token.
PUBLIC_PATHS = ("/", "/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json")
PUBLIC_PREFIXES = ("/static/",)
STATIC = Path(__file__).parent / "static"
#: Form field -> modality of /predict.
INPUT_MODALITIES = {"image": "image", "vitals": "vitals", "note": "text"}
T = TypeVar("T")


class Prediction(BaseModel):
    """A triage prediction."""

    probability: float = Field(description="probability of class 1 (binary model), else of the predicted class")
    probabilities: list[float] = Field(description="probability of each class")
    prediction: int = Field(description="predicted class")
    label: str = Field(description="what the classes predict (the training label column)")
    modalities_used: list[str] = Field(description="modalities given (the note is 'text')")
    contributions: dict[str, float] = Field(description="share of the prediction credited to each modality used")
    contribution_method: str = Field(description="modality_weights (late), attention_mass (cross-attention) or "
                                                 "integrated_gradients (early, intermediate, joint embedding)")
    latency_ms: float = Field(description="server time from the parsed request to the answer")


class SearchHit(BaseModel):
    """One search result."""

    rank: int
    id: str
    score: float = Field(description="cosine similarity of the query and the entry")
    metadata: dict[str, Any] = Field(description="the entry's index metadata (view, age, labels, ...)")
    thumbnail_url: str | None = Field(description="URL of the entry's thumbnail; None when it has no image")


class SearchResult(BaseModel):
    """Search results, best first."""

    hits: list[SearchHit]
    latency_ms: float


class Highlight(BaseModel):
    """A sentence or finding word of a generated report with its attention over the image."""

    text: str
    start: int = Field(description="character span [start, end) in the report")
    end: int
    finding: str | None = Field(description="the finding a word names; None for a sentence")
    attention: list[list[float]] = Field(description="(h, w) attention on the image token grid")
    overlay: str = Field(description="PNG data URI of the attention drawn over the image")


class Report(BaseModel):
    """A generated report."""

    text: str
    method: str = Field(description="decoding, e.g. 'greedy' or 'beam 3'")
    image: str = Field(description="PNG data URI of the image as displayed under the overlays")
    sentences: list[Highlight]
    words: list[Highlight] = Field(description="positive finding mentions")
    latency_ms: float


class Health(BaseModel):
    """Liveness."""

    status: str
    services: dict[str, bool] = Field(description="which of predict, search and report are loaded")
    token_required: bool


@dataclass
class Services:
    """The loaded models (None: not configured)."""

    predict: TriageService | None
    search: SearchService | None
    report: ReportService | None


def _milliseconds(started: float) -> float:
    return round(1000 * (time.perf_counter() - started), 2)


def _service(request: Request, name: str, option: str) -> Any:
    service = getattr(request.app.state.services, name)
    if service is None:
        raise HTTPException(503, f"{name}: not available; expected the server to be started with {option}")
    return service


def _with_image(data: bytes, folder: Path, read: Callable[[Path], T], what: str = "image") -> T:
    """``read(path)`` of an uploaded image saved under a server-chosen name; a ValueError -> 422."""
    with saved_image(data, folder) as path:
        try:
            return read(path)
        except ValueError as error:  # DataReadError included
            raise rejected(error, what, path) from error


def _predict(triage: TriageService, folder: Path, image: bytes | None, vitals: str | None,
             note: str | None) -> dict[str, Any]:
    fields = {"image": image, "vitals": vitals if vitals is not None and vitals.strip() else None,
              "note": parse_note(note)}
    for field, value in fields.items():
        if value is not None and INPUT_MODALITIES[field] not in triage.modalities:
            raise HTTPException(422, f"{field}: expected only inputs of the model's modalities "
                                     f"{triage.modalities}, received {field} ({INPUT_MODALITIES[field]})")
    fields["vitals"] = parse_vitals(vitals, triage.vitals_columns)
    inputs = {INPUT_MODALITIES[field]: value for field, value in fields.items() if value is not None}
    if not inputs:
        raise HTTPException(422, "expected at least one of image, vitals or note; received none")
    if image is not None:
        inputs["image"] = _with_image(image, folder, triage.read_image)
    try:
        return triage.predict(inputs)
    except ValueError as error:
        raise rejected(error, "predict") from error


def _hits(request: Request, hits: list[dict[str, Any]]) -> list[SearchHit]:
    root = request.scope.get("root_path", "")
    return [SearchHit(rank=rank, id=hit["id"], score=hit["score"], metadata=hit["metadata"],
                      thumbnail_url=f"{root}/thumbnail/{quote(hit['id'], safe='')}" if hit["has_image"] else None)
            for rank, hit in enumerate(hits, start=1)]


def _load(model_run: Path | None, index: str | None, search_model: Path | None,
          report_run: Path | None, onnx: Path | None) -> Services:
    return Services(predict=TriageService(model_run, onnx) if model_run is not None else None,
                    search=SearchService(index, search_model) if index is not None else None,
                    report=ReportService(report_run) if report_run is not None else None)


def create_app(model_run: Path | None = None, index: str | None = None, search_model: Path | None = None,
               report_run: Path | None = None, token: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, onnx: Path | None = None) -> FastAPI:
    """The FastAPI application serving the given runs (models load when it starts).

    Args:
        model_run: a classification run for ``/predict`` (``medfusion train``).
        index: an index folder or ``postgresql://`` URL for ``/search`` (with ``search_model``).
        search_model: the joint-embedding run that built ``index``.
        report_run: a report-generator run for ``/report`` (``medfusion train`` with ``task: report``).
        token: when given, the bearer token every non-public route requires.
        max_upload_bytes: largest request body accepted.
        onnx: an ONNX export of ``model_run`` (``medfusion export``) run by ONNX Runtime for ``/predict``.

    Raises:
        ValueError: on ``index`` without ``search_model`` or the reverse, a blank token or
            a bad limit; when the application starts, on a run or index that cannot be loaded.

    Examples::

        app = create_app(model_run=Path("runs/late"), index="index/", search_model=Path("runs/clip"))
        uvicorn.run(app, access_log=False)
    """
    if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
        raise ValueError(f"max_upload_bytes: expected an int >= 1, received {max_upload_bytes!r}")
    if token is not None and not token.strip():
        raise ValueError("token: expected a non-blank string or None, received a blank string")
    if onnx is not None and model_run is None:
        raise ValueError(f"onnx: an export needs its run for /predict; received onnx={onnx} without model_run")
    if (index is None) != (search_model is None):
        raise ValueError(f"search: expected both index and search_model or neither, received index={index!r}, "
                         f"search_model={search_model!r}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await run_in_threadpool(_load, model_run, index, search_model, report_run, onnx)
        with tempfile.TemporaryDirectory(prefix="medfusion-serve-") as uploads:
            app.state.uploads = Path(uploads)
            try:
                yield
            finally:
                if app.state.services.search is not None:
                    app.state.services.search.store.close()

    app = FastAPI(title="medfusion", version=__version__, lifespan=lifespan,
                  description="Multimodal triage prediction, text/image search and report generation.")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    if token is not None:
        app.add_middleware(BearerToken, token=token, public=PUBLIC_PATHS, public_prefixes=PUBLIC_PREFIXES)
    app.add_middleware(AccessLog)
    # declares the scheme in the OpenAPI description ("Authorize" in /docs); BearerToken enforces it
    bearer = [Security(HTTPBearer(auto_error=False))] if token is not None else []
    api = APIRouter(dependencies=bearer)

    @api.post("/predict", response_model=Prediction, tags=["triage"])
    async def predict(request: Request,
                      image: UploadFile | None = File(None, description="X-ray: DICOM, PNG or JPEG (by content)"),
                      vitals: str | None = Form(None, description='JSON object, e.g. {"heart_rate": 96}'),
                      note: str | None = Form(None, description="clinical note")) -> Prediction:
        """Triage prediction from any non-empty subset of image, vitals and note."""
        triage = _service(request, "predict", "--model")
        started = time.perf_counter()
        data = await image.read() if image is not None else None
        result = await run_in_threadpool(_predict, triage, request.app.state.uploads, data, vitals, note)
        return Prediction(**result, label=triage.label, latency_ms=_milliseconds(started))

    @api.get("/search", response_model=SearchResult, tags=["search"])
    async def search_text(request: Request, q: str = Query(..., max_length=2000, description="free-text query"),
                          k: int = Query(5, ge=1, le=100), where: str | None = Query(
                              None, max_length=2000, description="metadata filter, e.g. view = 'PA' and age > 60")
                          ) -> SearchResult:
        """Text → image search."""
        search = _service(request, "search", "--index and --search-model")
        started = time.perf_counter()
        try:
            hits = await run_in_threadpool(search.search, text=q, k=k, where=where)
        except ValueError as error:
            raise rejected(error, "search") from error
        return SearchResult(hits=_hits(request, hits), latency_ms=_milliseconds(started))

    @api.post("/search/image", response_model=SearchResult, tags=["search"])
    async def search_image(request: Request, image: UploadFile = File(..., description="DICOM, PNG or JPEG"),
                           k: int = Query(5, ge=1, le=100), where: str | None = Query(None, max_length=2000)
                           ) -> SearchResult:
        """Image → image search."""
        search = _service(request, "search", "--index and --search-model")
        started = time.perf_counter()
        data = await image.read()
        hits = await run_in_threadpool(_with_image, data, request.app.state.uploads,
                                lambda path: search.search(file=path, k=k, where=where), "search")
        return SearchResult(hits=_hits(request, hits), latency_ms=_milliseconds(started))

    @api.get("/thumbnail/{item_id:path}", response_class=Response, tags=["search"],
             responses={200: {"content": {"image/png": {}}}})
    async def thumbnail(request: Request, item_id: str, size: int = Query(160, ge=16, le=512)) -> Response:
        """PNG thumbnail of an indexed image, by its id."""
        search = _service(request, "search", "--index and --search-model")
        try:
            png = await run_in_threadpool(search.thumbnail, item_id, size)
        except DataReadError as error:
            raise HTTPException(404, "thumbnail: the indexed image file can no longer be read") from error
        if png is None:
            raise HTTPException(404, "thumbnail: expected the id of an indexed image, received an unknown id")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.post("/report", response_model=Report, tags=["report"])
    async def report(request: Request, image: UploadFile = File(..., description="DICOM, PNG or JPEG")) -> Report:
        """Generated report with the attention of each sentence and finding word."""
        generator = _service(request, "report", "--report-model")
        started = time.perf_counter()
        data = await image.read()
        result = await run_in_threadpool(_with_image, data, request.app.state.uploads, generator.report)
        return Report(**result, latency_ms=_milliseconds(started))

    @api.get("/version", tags=["service"])
    async def version(request: Request) -> dict[str, Any]:
        """medfusion version and what each loaded model is (modalities, vitals columns, fingerprints)."""
        services = request.app.state.services
        return {"medfusion": __version__,
                "models": {name: None if service is None else service.describe()
                           for name, service in vars(services).items()}}

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz(request: Request) -> Health:
        """Liveness: which services are loaded and whether a token is required (public)."""
        services = request.app.state.services
        return Health(status="ok", token_required=token is not None,
                      services={name: service is not None for name, service in vars(services).items()})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.include_router(api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
