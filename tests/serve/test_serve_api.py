"""The web service through FastAPI's TestClient: every route, bad inputs, token, logs, concurrency."""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import typer
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from medfusion.cli_serve import serve
from medfusion.data.io import write_dicom
from medfusion.serve import create_app
from medfusion.serve.middleware import BearerToken

TOKEN = "s3cret-token"
NOTE = "Patient Jane Roe-7731 reports productive cough and fever since Tuesday."


def png_bytes(size: int = 32, mode: str = "L") -> bytes:
    pixels = (np.arange(size * size).reshape(size, size) % 251).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def xray(triage_cohort) -> bytes:
    """A PNG X-ray of the triage cohort."""
    frame = pd.read_parquet(triage_cohort)
    return (triage_cohort.parent / frame["image"].dropna().iloc[0]).read_bytes()


@pytest.fixture(scope="module")
def client(triage_run, search_setup, report_setup):
    """A client of the service with every model loaded, no token."""
    _, clip, index = search_setup
    with TestClient(create_app(triage_run, str(index), clip, report_setup[1])) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def guarded(triage_run, search_setup):
    """A client of a service requiring TOKEN, with a 4 kB body limit."""
    _, clip, index = search_setup
    with TestClient(create_app(triage_run, str(index), clip, token=TOKEN, max_upload_bytes=4096)) as test_client:
        yield test_client


def detail(response) -> str:
    return response.json()["detail"]


# -- service routes -----------------------------------------------------------------------------------


def test_health_version_page_and_docs(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "token_required": False,
                                             "services": {"predict": True, "search": True, "report": True}}
    models = client.get("/version").json()["models"]
    assert models["predict"]["modalities"] == ["image", "text", "vitals"]
    assert models["predict"]["image_shape"] == [1, 32, 32] and models["search"]["entries"] == 96
    assert models["report"]["domain"] == "pathology"
    page = client.get("/")
    assert page.status_code == 200 and 'id="triage-form"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/search", "/search/image", "/thumbnail/{item_id}", "/report"} <= set(paths)


# -- /predict -------------------------------------------------------------------------------------------


def test_predict_every_modality(client, xray) -> None:
    response = client.post("/predict", files={"image": ("case", xray)},
                           data={"vitals": json.dumps({"heart_rate": 112, "spo2": 91.5, "temperature": None}),
                                 "note": NOTE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0 and body["probability"] == pytest.approx(body["probabilities"][1])
    assert body["prediction"] in (0, 1) and body["label"] == "pneumonia"
    assert body["modalities_used"] == ["image", "text", "vitals"]
    assert sum(body["contributions"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["contribution_method"] == "modality_weights" and body["latency_ms"] > 0


@pytest.mark.parametrize(("fields", "used"), [
    ({"data": {"vitals": '{"heart_rate": 90}'}}, ["vitals"]),
    ({"data": {"note": "dry cough", "vitals": "{}"}}, ["text"]),
])
def test_predict_subsets(client, fields, used) -> None:
    body = client.post("/predict", **fields).json()
    assert body["modalities_used"] == used and body["contributions"] == {used[0]: pytest.approx(1.0)}


def test_predict_reads_dicom_and_jpeg_by_content(client, xray, tmp_path: Path) -> None:
    pixels = np.asarray(Image.open(io.BytesIO(xray)).convert("L"))
    write_dicom(tmp_path / "x.dcm", pixels, modality="DX")
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG")
    for name, data in (("scan.png", (tmp_path / "x.dcm").read_bytes()), ("scan.dcm", jpeg.getvalue())):
        response = client.post("/predict", files={"image": (name, data, "text/plain")})
        assert response.status_code == 200, response.text
        assert response.json()["modalities_used"] == ["image"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"data": {"note": ""}}, "expected at least one of image, vitals or note; received none"),
    ({"data": {"note": "   ", "vitals": '{"spo2": null}'}}, "received none"),
    ({"data": {"vitals": "{heart_rate: 90"}}, "vitals: expected a JSON object {column: number}, received invalid"),
    ({"data": {"vitals": "[90, 95]"}}, "received a JSON list"),
    ({"data": {"vitals": '{"heart_rate": 90, "shoe_size": 44}'}}, "unknown column(s) ['shoe_size']; expected some"),
    ({"data": {"vitals": '{"heart_rate": "high"}'}},
     "expected 'heart_rate' to be a finite number or null, received str"),
    ({"data": {"vitals": '{"heart_rate": true}'}}, "received bool"),
    ({"data": {"vitals": '{"heart_rate": NaN}'}}, "received a non-finite or out-of-range number"),
    ({"data": {"vitals": '{"heart_rate": 1e300}'}}, "received a non-finite or out-of-range number"),
    ({"data": {"vitals": '{"heart_rate": 1' + "0" * 400 + "}"}}, "received a non-finite or out-of-range number"),
])
def test_predict_rejects_bad_fields(client, fields, message) -> None:
    response = client.post("/predict", **fields)
    assert response.status_code == 422
    assert message in detail(response)


def test_predict_refuses_inputs_the_model_does_not_use(triage_run) -> None:
    with TestClient(create_app(model_run=triage_run)) as only_triage:
        only_triage.app.state.services.predict.modalities = ["image", "vitals"]
        response = only_triage.post("/predict", data={"note": "cough", "vitals": '{"spo2": 93}'})
    assert response.status_code == 422
    assert detail(response) == ("note: expected only inputs of the model's modalities ['image', 'vitals'], "
                                "received note (text)")


@pytest.mark.parametrize(("data", "received"), [
    (b"GIF89a" + bytes(200), "received a GIF image"),
    (b"%PDF-1.7\n" + bytes(200), "received a PDF document"),
    ("Patient Jane Roe, chest pain".encode(), "received text"),
    (bytes(range(256)), "received content of an unknown kind"),
])
def test_predict_rejects_other_content_by_magic_bytes(client, data, received) -> None:
    response = client.post("/predict", files={"image": ("xray.png", data, "image/png")})
    assert response.status_code == 415
    assert detail(response) == f"image: expected DICOM, PNG or JPEG content, {received}"
    assert "Jane" not in detail(response)


def test_predict_rejects_corrupt_and_wrong_images(client, xray, tmp_path: Path) -> None:
    write_dicom(tmp_path / "x.dcm", np.zeros((32, 32), np.uint16), modality="DX")
    corrupt_dicom = bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(40)
    cases = [
        (corrupt_dicom, "image: DICOM file has no pixel data"),
        ((tmp_path / "x.dcm").read_bytes()[:-300],
         "image: cannot decode pixel data (Explicit VR Little Endian; truncated or corrupt?)"),
        (xray[:20], "expected a readable PNG header, received a corrupt or truncated PNG file"),
        (xray[:-40], "image: cannot decode image (truncated or corrupt?)"),
        (b"", "image: expected a file, received 0 bytes"),
        (png_bytes(64), "expected shape (1, 32, 32) (channels, height, width) as the model was trained on, "
                        "received (1, 64, 64)"),
        (png_bytes(32, "RGB"), "received (3, 32, 32)"),
    ]
    for data, message in cases:
        response = client.post("/predict", files={"image": ("x.png", data)})
        assert response.status_code == 422, (message, response.text)
        assert message in detail(response)
        assert "upload-" not in detail(response) and "/tmp" not in detail(response)


def test_predict_refuses_too_many_pixels(client) -> None:
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, format="PNG")
    response = client.post("/predict", files={"image": ("big.png", buffer.getvalue())})
    assert response.status_code == 422 and "at most 40,000,000 pixels, received 8000 x 6000" in detail(response)


def test_predict_concurrent_requests_agree(client, xray) -> None:
    def call(_):
        return client.post("/predict", files={"image": ("x", xray)}, data={"note": "fever"}).json()["probability"]

    with ThreadPoolExecutor(6) as pool:
        probabilities = list(pool.map(call, range(12)))
    assert probabilities == pytest.approx([probabilities[0]] * 12)


# -- search ------------------------------------------------------------------------------------------


def test_text_search_and_thumbnails(client) -> None:
    response = client.get("/search", params={"q": "cardiomegaly with effusion", "k": 7})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all("path" not in h["metadata"] and h["metadata"]["modality"] == "image" for h in hits)
    thumbnail = client.get(hits[0]["thumbnail_url"], params={"size": 64})
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (64, 64)
    filtered = client.get("/search", params={"q": "normal", "k": 50, "where": "sex = 'F' and age > 50"}).json()
    assert filtered["hits"] and all(h["metadata"]["sex"] == "F" and h["metadata"]["age"] > 50
                                    for h in filtered["hits"])


def test_image_search_finds_the_image_itself(client, search_setup) -> None:
    data, _, _ = search_setup
    frame = pd.read_parquet(data / "manifest.parquet")
    row = frame[frame["image"].notna() & (frame["image"] != "")].iloc[3]
    image = (data / row["image"]).read_bytes()
    response = client.post("/search/image", params={"k": 3}, files={"image": ("q", image)})
    assert response.status_code == 200, response.text
    top = response.json()["hits"][0]
    assert top["id"] == str(row["patient_id"]) and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert client.post("/search/image", files={"image": ("q", b"GIF89a" + bytes(300))}).status_code == 415


@pytest.mark.parametrize(("params", "message"), [
    ({"q": "effusion", "where": "shoe_size > 3"}, "search: "),
    ({"q": "   "}, "search: the text query is blank"),
])
def test_search_rejects_bad_queries(client, params, message) -> None:
    response = client.get("/search", params=params)
    assert response.status_code == 422 and detail(response).startswith(message)
    assert client.get("/search", params={"q": "x", "k": 0}).status_code == 422


@pytest.mark.parametrize("item_id", ["no-such-id", "../../../../etc/passwd", "/etc/hostname"])
def test_thumbnail_of_unknown_id_is_404(client, item_id) -> None:
    response = client.get(f"/thumbnail/{quote(item_id, safe='')}")
    assert response.status_code == 404
    assert detail(response) == "thumbnail: expected the id of an indexed image, received an unknown id"


# -- report --------------------------------------------------------------------------------------------


def test_report_text_and_attention_maps(client, report_setup) -> None:
    manifest, _ = report_setup
    frame = pd.read_parquet(manifest)
    image = (manifest.parent / frame["image"].dropna().iloc[0]).read_bytes()
    response = client.post("/report", files={"image": ("patch", image)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] and body["method"] == "greedy" and body["image"].startswith("data:image/png;base64,")
    for highlight in [*body["sentences"], *body["words"]]:
        assert body["text"][highlight["start"]:highlight["end"]] == highlight["text"]
        assert highlight["overlay"].startswith("data:image/png;base64,")
        assert np.asarray(highlight["attention"]).ndim == 2
    assert body["sentences"]
    assert client.post("/report", files={"image": ("x", b"%PDF-1.4" + bytes(300))}).status_code == 415


# -- missing services, token, limits, logs -----------------------------------------------------------------


def test_routes_without_their_model_answer_503(triage_run, xray) -> None:
    with TestClient(create_app(model_run=triage_run)) as only_triage:
        for response, option in ((only_triage.get("/search", params={"q": "x"}), "--index and --search-model"),
                                 (only_triage.get("/thumbnail/abc"), "--index and --search-model"),
                                 (only_triage.post("/report", files={"image": ("x", xray)}), "--report-model")):
            assert response.status_code == 503
            assert detail(response).endswith(f"not available; expected the server to be started with {option}")
        assert only_triage.get("/healthz").json()["services"] == {"predict": True, "search": False, "report": False}
    with TestClient(create_app()) as empty:
        assert empty.post("/predict", data={"note": "x"}).status_code == 503


def test_token_is_required_on_data_routes(guarded) -> None:
    for method, path in (("get", "/version"), ("get", "/search?q=x"), ("get", "/thumbnail/x"),
                         ("post", "/predict"), ("post", "/report"), ("post", "/search/image")):
        response = getattr(guarded, method)(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert detail(response) == "expected the header 'Authorization: Bearer <token>', received none"
    wrong = guarded.get("/version", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and detail(wrong).endswith("received another token")
    for path in ("/", "/static/style.css", "/healthz", "/docs", "/openapi.json"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.get("/healthz").json()["token_required"] is True
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/version", headers=headers).status_code == 200
    assert guarded.post("/predict", data={"note": "fever"}, headers=headers).status_code == 200
    assert "HTTPBearer" in json.dumps(guarded.get("/openapi.json").json()["components"]["securitySchemes"])


def test_oversized_bodies_are_refused(guarded) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    declared = guarded.post("/predict", files={"image": ("x.png", bytes(5000))}, headers=headers)
    assert declared.status_code == 413
    assert detail(declared) == "request body: expected at most 4,096 bytes, received more"
    streamed = guarded.post("/predict", content=iter([bytes(3000), bytes(3000)]), headers={
        **headers, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert streamed.status_code == 413
    # the token is checked before the body is read
    assert guarded.post("/predict", files={"image": ("x.png", bytes(5000))}).status_code == 401


def test_logs_hold_routes_but_no_patient_data(client, xray, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="medfusion.serve"):
        client.post("/predict", files={"image": ("jane_roe_7731.png", xray)}, data={"note": NOTE})
        client.get("/search", params={"q": "Jane Roe-7731 effusion"})
        client.get("/thumbnail/Jane-Roe-7731")
    lines = [r.getMessage() for r in caplog.records if r.name == "medfusion.serve"]
    assert any(line.startswith("POST /predict 200 ") for line in lines)
    assert any(line.startswith("GET /search 200 ") for line in lines)
    assert any(line.startswith("GET /thumbnail/{item_id:path} 404 ") for line in lines)
    assert not any("7731" in line or "Roe" in line or "cough" in line for line in lines)


def test_create_app_and_startup_errors(search_setup) -> None:
    _, clip, index = search_setup
    with pytest.raises(ValueError, match="expected both index and search_model"):
        create_app(index=str(index))
    with pytest.raises(ValueError, match="token: expected a non-blank string"):
        create_app(token="  ")
    with pytest.raises(ValueError, match="max_upload_bytes"):
        create_app(max_upload_bytes=0)
    with pytest.raises(ValueError, match="expected a classification run, received task 'contrastive'"):
        with TestClient(create_app(model_run=clip)):
            pass


def test_serve_command(triage_run, monkeypatch) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    cli = typer.Typer()
    cli.command()(serve)
    assert CliRunner().invoke(cli, []).exit_code == 2
    result = CliRunner().invoke(cli, ["--model", str(triage_run), "--port", "8123"], env={"MEDFUSION_TOKEN": "t"})
    assert result.exit_code == 0, result.output
    (app, options), = calls
    assert options == {"host": "127.0.0.1", "port": 8123, "access_log": False, "log_level": "info"}
    assert any(middleware.cls is BearerToken for middleware in app.user_middleware)
    bad = CliRunner().invoke(cli, ["--index", "somewhere"])
    assert bad.exit_code == 2 and "expected both index and search_model" in bad.output


def test_predict_through_onnx_runtime_matches_pytorch(triage_run, tmp_path) -> None:
    from medfusion.deploy.export import export_model

    export_model(triage_run, tmp_path / "model.onnx", format="onnx")
    case = {"note": "fever and productive cough", "vitals": '{"spo2": 91, "temperature": 38.9}'}
    with TestClient(create_app(model_run=triage_run)) as torch_client:
        expected = torch_client.post("/predict", data=case).json()
    with TestClient(create_app(model_run=triage_run, onnx=tmp_path / "model.onnx")) as onnx_client:
        assert onnx_client.app.state.services.predict.describe()["backend"] == "onnxruntime"
        received = onnx_client.post("/predict", data=case).json()
    assert abs(received["probability"] - expected["probability"]) < 1e-4
    assert received["modalities_used"] == expected["modalities_used"] == ["text", "vitals"]
    with pytest.raises(ValueError, match="without model_run"):
        create_app(onnx=tmp_path / "model.onnx")
